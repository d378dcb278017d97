"""What is queued, and when: one task per changed save, with the site's transaction, on the configured Tasks
backend and queue; a failed enqueue loses nothing (the lead stays pending for the sweeper).

The ``enqueued`` fixture switches to the dummy backend to see what was queued without running it;
``database_tasks`` uses the database backend, whose task row is part of the site's transaction.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.module_loading import import_string

from crmify import tasks
from crmify.backends import locmem
from crmify.models import Lead, SyncState
from tests.doubles import Enqueued
from tests.engine_helpers import Configure, operations
from tests.factories import lead_of, make_profile, make_user

pytestmark = pytest.mark.django_db(transaction=True)


# -- what is queued (dummy Tasks backend) ----------------------------------------------------------------


def test_each_changed_save_queues_exactly_one_task_and_unchanged_saves_none(
    enqueued: Enqueued,
) -> None:
    user = make_user()
    lead = lead_of(user)
    assert enqueued.lead_ids == [lead.pk]
    user.first_name = "Grace"
    user.save()
    assert enqueued.lead_ids == [lead.pk, lead.pk]
    user.save()
    user.save()
    assert enqueued.lead_ids == [lead.pk, lead.pk]
    assert locmem.calls == []  # the dummy backend runs nothing


def test_tasks_go_to_the_configured_queue(configure: Configure, enqueued: Enqueued) -> None:
    make_user()
    assert [r.task.queue_name for r in enqueued.results] == ["default"]


def test_a_rolled_back_transaction_enqueues_nothing(enqueued: Enqueued) -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert enqueued.results == []


def test_a_queued_lead_syncs_when_the_worker_runs(enqueued: Enqueued) -> None:
    user = make_user()
    assert lead_of(user).sync_state == SyncState.PENDING
    assert enqueued.run_all() == ["synced"]
    assert lead_of(user).sync_state == SyncState.SYNCED
    assert operations() == ["create"]


def test_two_changes_before_the_worker_runs_send_the_latest_values_once(
    enqueued: Enqueued,
) -> None:
    user = make_user()
    user.first_name = "Grace"
    user.save()
    assert enqueued.run_all() == ["synced", "skipped"]
    assert operations() == ["create"]
    assert locmem.leads["1"]["first_name"] == "Grace"


# -- the database Tasks backend: the task row is part of the site's transaction --------------------------


@pytest.fixture
def database_tasks(configure: Configure) -> None:
    configure(TASK_BACKEND="default")


def queued_tasks() -> list[list[Any]]:
    from django_tasks_db.models import DBTaskResult

    return [row.args_kwargs["args"] for row in DBTaskResult.objects.order_by("enqueued_at")]


@pytest.mark.usefixtures("database_tasks")
def test_database_backend_commits_the_lead_and_its_task_together() -> None:
    with CaptureQueriesContext(connection) as queries:
        user = make_user()
    lead = lead_of(user)
    assert queued_tasks() == [[lead.pk]]
    # One transaction after the user's own insert: the lead and the task share its commit.
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    assert statements.count("INSERT") == 3
    assert locmem.calls == []  # the worker has not run


@pytest.mark.usefixtures("database_tasks")
def test_database_backend_rollback_leaves_neither_lead_nor_task() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        make_user()
        raise RuntimeError("the view failed")
    assert Lead.objects.count() == 0
    assert queued_tasks() == []


@pytest.mark.usefixtures("database_tasks")
def test_database_backend_queues_one_task_per_changed_save_and_none_when_unchanged() -> None:
    user = make_user()
    user.first_name = "Grace"
    user.save()
    user.save()
    lead_id = lead_of(user).pk
    assert queued_tasks() == [[lead_id], [lead_id]]


@pytest.mark.usefixtures("database_tasks")
def test_a_failed_enqueue_leaves_the_lead_pending_for_the_sweeper_and_the_save_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django_tasks_db.backend import DatabaseBackend

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("task table is gone")

    monkeypatch.setattr(DatabaseBackend, "enqueue", broken)
    with transaction.atomic():
        user = make_user()
    assert User.objects.filter(pk=user.pk).exists()
    assert lead_of(user).sync_state == SyncState.PENDING
    assert queued_tasks() == []


def test_the_seed_readme_configuration_verbatim_queues_profile_saves_without_network(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed README's Quick Start, pointed at our test app; TASK_BACKEND left at its default, the
    # database backend, as a site that pastes the README gets.
    settings.CRMIFY = {
        "BACKEND": "crmify.backends.insightly.InsightlyBackend",
        "LEAD_MODEL": "tests.testapp.models.UserProfile",
        "LEAD_MODEL_FIELDMAPPER": "tests.testapp.mappers.UserProfileFieldMapper",
    }
    monkeypatch.setenv("CRMIFY_BACKEND_AUTH_API_KEY", "seed-example-key")
    attempts: list[Any] = []

    def refuse(sock: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("no network on the save path")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    profile = make_profile(user=make_user(first_name="Seed"))
    profile.user.last_name = "Example"
    profile.user.save()
    profile.save()
    lead = lead_of(profile)
    assert (lead.first_name, lead.last_name, lead.status) == ("Seed", "Example", "NotContacted")
    assert lead.sync_state == SyncState.PENDING
    assert queued_tasks() == [[lead.pk], [lead.pk]]
    assert attempts == []


# -- a Tasks backend that is not there -------------------------------------------------------------------


def test_a_task_backend_alias_that_does_not_exist_does_not_break_the_save(
    configure: Configure,
) -> None:
    configure(TASK_BACKEND="nope")
    with transaction.atomic():
        user = make_user()
    assert (
        lead_of(user).sync_state == SyncState.PENDING
    )  # the sweeper queues it once TASKS is fixed
    assert locmem.calls == []


@pytest.mark.parametrize("name", tasks.__all__)
def test_a_task_queued_under_its_crmify_tasks_path_still_runs(name: str) -> None:
    """Tasks backends store a task's module path (django-tasks-db's ``task_path``) and import it to run
    it: each task keeps the ``crmify.tasks.<name>`` path sites' queues already hold."""
    task = getattr(tasks, name)
    assert task.module_path == f"crmify.tasks.{name}"
    assert import_string(task.module_path) is task
