"""``manage.py crmify_backfill``: bring existing lead-model rows into the CRM (see ``crmify.backfill``).

``--dry-run`` prints what a run would do and cost and changes nothing. Without it a run is recorded and its
chunks are queued for the task worker (``--follow`` shows its progress here), or processed in this
process with ``--wait``. Both show two bars, drawn by rich: the rows mapped and the leads delivered to the
CRM (synced, failed, waiting), and follow the run until every lead it queued reached a final state, the
same figures and the same "finished" as the admin's progress page (``crmify.backfill_report``).
``--resume RUN`` goes on from a run's last checkpoint.
"""

from __future__ import annotations

from datetime import date, datetime
from time import monotonic, sleep
from types import TracebackType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser, OutputWrapper
from django.utils import timezone
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

from crmify import backfill
from crmify.backfill import BackfillOptions, BackfillOptionsError
from crmify.backfill_report import RunProgress, counts_sentence, eta_text, run_progress
from crmify.exceptions import BackendError
from crmify.models import BackfillRun

#: Seconds between two looks at a run the task worker processes (``--follow``, and ``--wait`` while
#: the worker delivers the leads the run queued).
FOLLOW_INTERVAL = 1.0


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{value!r} is not a date: use YYYY-MM-DD.") from None


class _CommandStream:
    """The command's stdout as the file rich writes to (``call_command(stdout=...)`` is honoured)."""

    def __init__(self, out: OutputWrapper) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text, ending="")
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return self.out.isatty()


class ProgressBars:
    """Two live bars, rows mapped and leads delivered, each with its count and time left.

    On a terminal rich redraws them in place; elsewhere (a log, a pipe) it prints them once, when they stop.
    """

    def __init__(self, out: OutputWrapper) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(file=_CommandStream(out), width=110),  # type: ignore[arg-type]
        )
        self.rows: TaskID = self.progress.add_task("Rows mapped", total=None, detail="")
        self.leads: TaskID = self.progress.add_task("Leads delivered", total=None, detail="")

    def __enter__(self) -> ProgressBars:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def show(self, progress: RunProgress, seconds_per_row: float | None = None) -> None:
        """Draw ``progress``; the rows' time left uses ``seconds_per_row`` (this process's pace) if given."""
        run, delivery = progress.run, progress.delivery
        mapping_eta = eta_text(run, seconds_per_row) if run.is_active else None
        self.progress.update(
            self.rows,
            completed=run.scanned,
            total=max(run.total_estimate, run.scanned),
            detail=progress.stage_label if not mapping_eta else f"time left {mapping_eta}",
        )
        detail = f"synced {delivery.synced}, failed {delivery.failed}, waiting {delivery.waiting}"
        if progress.delivery_eta:
            detail += f", time left {progress.delivery_eta}"
        self.progress.update(
            self.leads, completed=delivery.settled, total=delivery.queued, detail=detail
        )


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
        """Show the progress of a run the task worker processes until every lead it queued reached a
        final state; Ctrl-C stops following (the run goes on)."""
        with ProgressBars(self.stdout) as bars:
            progress = self._until_settled(run, bars)
        self._summary(progress)

    def _until_settled(self, run: BackfillRun, bars: ProgressBars) -> RunProgress:
        """Redraw ``bars`` every ``FOLLOW_INTERVAL`` until nothing of ``run`` moves any more, or Ctrl-C."""
        try:
            while True:
                run.refresh_from_db()
                progress = run_progress(run)
                bars.show(progress)
                if progress.settled:
                    return progress
                sleep(FOLLOW_INTERVAL)
        except KeyboardInterrupt:
            self.stdout.write(
                "\nStopped following; the task worker goes on with the run and its leads."
            )
            return run_progress(run)

    def _summary(self, progress: RunProgress) -> None:
        run, delivery = progress.run, progress.delivery
        style = self.style.SUCCESS if progress.stage == "finished" else self.style.WARNING
        ending = f": {run.last_error}" if run.state == BackfillRun.State.FAILED else ""
        self.stdout.write(
            style(
                f"Backfill run {run.pk} {progress.stage_label.lower()}: {counts_sentence(run)}; "
                f"delivered to the CRM: {delivery.synced} synced, {delivery.failed} failed, "
                f"{delivery.waiting} waiting{ending}."
            )
        )

    def _process(self, run: BackfillRun) -> None:
        """Map the run's rows here, chunk by chunk, then follow the task worker delivering its leads."""
        with ProgressBars(self.stdout) as bars:
            self._map_here(run, bars)
            progress = self._until_settled(run, bars)
        self._summary(progress)

    def _map_here(self, run: BackfillRun, bars: ProgressBars) -> None:
        started = monotonic()
        scanned_before = run.scanned
        while True:
            try:
                result = backfill.run_chunk(run.pk, chain=False)
            except Exception as exc:
                raise CommandError(
                    f"Backfill run {run.pk} failed: {exc}. Go on with --resume {run.pk}."
                ) from None
            if result.waiting_until is not None:
                self._sleep_until(run, result.waiting_until)
                continue
            run.refresh_from_db()
            # The pace of this process, not of the run's whole life (it may have stood still for days).
            pace = (monotonic() - started) / max(run.scanned - scanned_before, 1)
            bars.show(run_progress(run), pace)
            if not result.more:
                return
