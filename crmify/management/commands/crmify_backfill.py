"""``manage.py crmify_backfill``: bring existing lead-model rows into the CRM (see ``crmify.backfill``).

``--dry-run`` prints what a run would do and cost and changes nothing. Without it a run is recorded and its
chunks are queued for the task worker (``--follow`` shows its progress bar here), or processed in this
process with ``--wait`` (with a progress bar).
``--resume RUN`` goes on from a run's last checkpoint.
"""

from __future__ import annotations

from datetime import date, datetime
from time import monotonic, sleep
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from crmify import backfill
from crmify.backfill import BackfillOptions, BackfillOptionsError
from crmify.backfill_report import counts_sentence, eta_text
from crmify.exceptions import BackendError
from crmify.models import BackfillRun

BAR_WIDTH = 30
#: Seconds between two looks at a run the task worker processes (``--follow``).
FOLLOW_INTERVAL = 1.0


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date: use YYYY-MM-DD.") from None


def progress_line(run: BackfillRun, seconds_per_row: float | None = None) -> str:
    """``[#####.....] 45% 4500/10000 ETA 1m20s``: one line of the terminal progress bar.

    The ETA uses ``seconds_per_row`` (the pace this process saw) when given, else the run's own pace.
    """
    percent = run.percent
    filled = BAR_WIDTH * percent // 100
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    line = f"[{bar}] {percent:3d}% {run.scanned}/{run.total_estimate}"
    if run.state == BackfillRun.State.FINISHED:
        return line + " done"
    eta = eta_text(run, seconds_per_row)
    return line + (f" ETA {eta}" if eta is not None else "")


class Command(BaseCommand):
    help = (
        "Backfill the CRM from the existing LEAD_MODEL rows: a dry run with --dry-run, else a run "
        "processed in chunks by the task worker (or here with --wait), resumable with --resume."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Report what a run would do and cost (lists the CRM's leads; writes nothing).",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=backfill.DEFAULT_BATCH_SIZE,
            help=f"Rows per chunk (default {backfill.DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--only-missing", action="store_true", help="Only rows that have no lead yet."
        )
        parser.add_argument(
            "--joined-after",
            type=_day,
            help="Only rows with date_joined on or after this day (YYYY-MM-DD).",
        )
        parser.add_argument(
            "--joined-before",
            type=_day,
            help="Only rows with date_joined before this day (YYYY-MM-DD).",
        )
        parser.add_argument(
            "--resume", type=int, metavar="RUN_ID", help="Go on with this run from its checkpoint."
        )
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Process the chunks in this process, with a progress bar, instead of the task worker.",
        )
        parser.add_argument(
            "--follow",
            action="store_true",
            help="Queue the run for the task worker and show its progress bar until it ends.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["resume"] is not None:
            run = self._resume(options["resume"], wait=options["wait"])
        else:
            try:
                chosen = BackfillOptions(
                    batch_size=options["batch_size"],
                    only_missing=options["only_missing"],
                    joined_after=options["joined_after"],
                    joined_before=options["joined_before"],
                )
                if options["dry_run"]:
                    self._report(backfill.plan(chosen))
                    return
                run = backfill.start(chosen, enqueue=not options["wait"])
            except BackfillOptionsError as exc:
                raise CommandError(str(exc)) from None
            except BackendError as exc:
                raise CommandError(f"The CRM could not be listed: {exc}") from None
            self.stdout.write(f"Backfill run {run.pk}: {run.total_estimate} rows to scan.")
        if options["wait"]:
            self._process(run)
        elif options["follow"]:
            self.stdout.write("Queued for the task worker; following its progress (Ctrl-C stops).")
            self._follow(run)
        else:
            self.stdout.write(
                f"Queued for the task worker. Follow it in the admin, here with --follow, or "
                f"process it in this process with --resume {run.pk} --wait."
            )

    def _resume(self, run_id: int, *, wait: bool) -> BackfillRun:
        run = BackfillRun.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"There is no backfill run {run_id}.")
        if wait:
            # This process does the chunks: mark the run running without queueing a chunk task.
            if run.state == BackfillRun.State.FINISHED:
                raise CommandError(f"Backfill run {run_id} is already finished.")
            BackfillRun.objects.filter(pk=run.pk).update(
                state=BackfillRun.State.RUNNING, last_error="", finished_at=None
            )
            run.refresh_from_db()
        elif not backfill.resume(run):
            raise CommandError(f"Backfill run {run_id} is already finished.")
        self.stdout.write(
            f"Resuming backfill run {run.pk} after {run.scanned} of {run.total_estimate} rows."
        )
        return run

    def _report(self, report: backfill.BackfillPlan) -> None:
        self.stdout.write("Dry run: nothing was written and nothing but the CRM listing was sent.")
        width = max(len(label) for label, _ in report.rows())
        for label, value in report.rows():
            self.stdout.write(f"  {label + ':':<{width + 1}} {value}")

    def _sleep_until(self, run: BackfillRun, moment: datetime) -> None:
        """Wait here for the CRM's quota to reset; Ctrl-C leaves the run to be resumed later."""
        self.stdout.write("")
        self.stdout.write(
            self.style.WARNING(
                f"The CRM's daily quota is used up: waiting until {timezone.localtime(moment):%H:%M %Z} "
                f"(Ctrl-C stops here; go on later with --resume {run.pk} --wait)."
            )
        )
        sleep(max((moment - timezone.now()).total_seconds(), 0) + 1)

    def _follow(self, run: BackfillRun) -> None:
        """Show the progress of a run the task worker processes, until it ends; Ctrl-C stops following."""
        try:
            while True:
                run.refresh_from_db()
                line = progress_line(run)
                if run.last_error and run.is_active:
                    line += f"  ({run.last_error})"
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
                if not run.is_active:
                    break
                sleep(FOLLOW_INTERVAL)
        except KeyboardInterrupt:
            self.stdout.write("\nStopped following; the run goes on in the task worker.")
            return
        self.stdout.write("")
        self._summary(run)

    def _summary(self, run: BackfillRun) -> None:
        style = (
            self.style.SUCCESS if run.state == BackfillRun.State.FINISHED else self.style.WARNING
        )
        ending = f": {run.last_error}" if run.state == BackfillRun.State.FAILED else ""
        self.stdout.write(
            style(
                f"Backfill run {run.pk} {run.get_state_display().lower()}: "
                f"{counts_sentence(run)}{ending}."
            )
        )

    def _process(self, run: BackfillRun) -> None:
        started = monotonic()
        scanned_before = run.scanned
        while True:
            try:
                result = backfill.run_chunk(run.pk, chain=False)
            except Exception as exc:
                self.stdout.write("")
                raise CommandError(
                    f"Backfill run {run.pk} failed: {exc}. Go on with --resume {run.pk}."
                ) from None
            if result.waiting_until is not None:
                self._sleep_until(run, result.waiting_until)
                continue
            run.refresh_from_db()
            # The pace of this process, not of the run's whole life (it may have stood still for days).
            pace = (monotonic() - started) / max(run.scanned - scanned_before, 1)
            self.stdout.write("\r" + progress_line(run, pace), ending="")
            self.stdout.flush()
            if not result.more:
                break
        self.stdout.write("")
        self._summary(run)
