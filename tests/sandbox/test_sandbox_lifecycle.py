"""Starting, stopping, persistence, and the two command-line entry points."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from crmify.sandbox import Dialect, Faults, SandboxServer
from crmify.sandbox.cli import add_arguments, build_server

if TYPE_CHECKING:
    from tests.sandbox.conftest import Api

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_state_file_survives_restart(tmp_path: Path, client_for: type[Api]) -> None:
    state_file = tmp_path / "crm" / "sandbox.json"
    with SandboxServer(state_file=state_file) as first:
        api = client_for(first)
        kept = api.post("Leads", json={"LAST_NAME": "Kept", "EMAIL": "k@example.com"}).json()
        gone = api.post("Leads", json={"LAST_NAME": "Gone"}).json()
        api.delete(f"Leads/{gone['LEAD_ID']}")
    assert json.loads(state_file.read_text())["leads"][0]["LAST_NAME"] == "Kept"
    assert [p.name for p in state_file.parent.iterdir()] == ["sandbox.json"]  # no temp left

    with SandboxServer(state_file=state_file) as second:
        api = client_for(second)
        assert api.get("Leads").json() == [kept]
        new = api.post("Leads", json={"LAST_NAME": "New"}).json()
        # Ids keep counting from where the first run stopped, deleted ones are not reused.
        assert new["LEAD_ID"] > gone["LEAD_ID"]


def test_a_state_file_from_before_a_field_was_rendered_loads_it_empty(
    tmp_path: Path, client_for: type[Api]
) -> None:
    state_file = tmp_path / "sandbox.json"
    old_lead = {"LEAD_ID": 71300001, "LAST_NAME": "Old", "DATE_UPDATED_UTC": "2026-01-01 00:00:00"}
    state_file.write_text(json.dumps({"version": 1, "next_lead_id": 71300002, "leads": [old_lead]}))
    with SandboxServer(state_file=state_file) as server:
        lead = client_for(server).get("Leads/71300001").json()
    assert lead["LAST_NAME"] == "Old"
    assert lead["LINKS"] == [] and lead["IMAGE_URL"] is None and lead["CREATED_USER_ID"] is None


def test_reset_empties_the_state_file_too(tmp_path: Path) -> None:
    state_file = tmp_path / "sandbox.json"
    with SandboxServer(state_file=state_file) as server:
        server.add_lead({"LAST_NAME": "X"})
        server.reset()
    assert json.loads(state_file.read_text())["leads"] == []


def test_stop_closes_kept_alive_connections(client_for: type[Api]) -> None:
    server = SandboxServer().start()
    api = client_for(server)
    assert api.get("Leads").status_code == 200  # the session now holds a pooled connection
    server.stop()
    with pytest.raises(requests.ConnectionError):
        api.get("Leads", timeout=2)
    server.stop()  # idempotent


def test_url_is_known_before_start_and_ends_with_version() -> None:
    server = SandboxServer()
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/v3.1/"
        assert server.port > 0
    finally:
        server.stop()


def test_cli_options_build_a_configured_server(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = parser.parse_args(
        [
            "--port", "0",
            "--api-key", "K",
            "--rate", "none",
            "--daily-quota", "5",
            "--error-rate", "0.25",
            "--seed", "4",
            "--lead-status", "Open",
            "--lead-status", "Won",
            "--custom-field", "Tier__c:DROPDOWN:Gold|Silver",
            "--state-file", str(tmp_path / "s.json"),
            "--create-status", "201",
            "--custom-fields-on-put", "replace",
            "--search-match", "contains",
            "--quiet",
        ]
    )  # fmt: skip
    server = build_server(vars(options))
    try:
        assert server.api_key == "K"
        assert server.faults == Faults(
            error_rate=0.25, daily_quota=5, requests_per_second=None, seed=4
        )
        assert [s.name for s in server.state.statuses] == ["Open", "Won"]
        assert server.state.custom_fields[0].options == ("Gold", "Silver")
        assert server.state.dialect == Dialect(
            create_status=201, custom_fields_on_put="replace", search_match="contains"
        )
    finally:
        server.stop()


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
@pytest.mark.parametrize(
    ("crm", "probe", "credentials"),
    [
        ([], "LeadStatuses", {"auth": ("K", "")}),
        (
            ["--crm", "hubspot"],
            "/crm/v3/properties/contacts",
            {"headers": {"Authorization": "Bearer K"}},
        ),
    ],
    ids=["insightly", "hubspot"],
)
def test_python_m_sandbox_prints_url_and_key_and_stops_on_ctrl_c(
    crm: list[str], probe: str, credentials: dict[str, Any]
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "crmify.sandbox", *crm, "--port", "0", "--api-key", "K", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        assert url.endswith("/v3.1/") if not crm else url.startswith("http://127.0.0.1:")
        assert "K" in process.stdout.readline()
        assert requests.get(url + probe, timeout=5, **credentials).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0  # a loaded CI machine: exiting can take seconds
    finally:
        if process.poll() is None:
            process.kill()


def test_management_command_shares_the_cli_options() -> None:
    pytest.importorskip("django")
    from crmify.management.commands.crmify_sandbox import Command

    parser = Command().create_parser("manage.py", "crmify_sandbox")
    options = vars(parser.parse_args(["--port", "0", "--daily-quota", "unlimited", "--quiet"]))
    server = build_server(options)
    try:
        assert server.faults.daily_quota is None
    finally:
        server.stop()


def test_unusable_state_file_is_a_clear_error(tmp_path: Path) -> None:
    state_file = tmp_path / "sandbox.json"
    state_file.write_text('{"leads": "oops"}')
    with pytest.raises(ValueError, match="state file"):
        SandboxServer(state_file=state_file)


def test_concurrent_creates_get_distinct_ids(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(n: int) -> int:
        response = requests.post(
            api.server.url + "Leads",
            json={"LAST_NAME": f"T{n}"},
            auth=(api.server.api_key, ""),
            timeout=5,
        )
        return int(response.json()["LEAD_ID"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(24)))
    assert len(set(ids)) == 24 == len(api.server.leads())


@pytest.mark.skipif(sys.platform == "win32", reason="signal masks are POSIX")
def test_python_m_sandbox_stops_on_sigint_even_when_its_parent_blocked_or_ignored_it() -> None:
    def hostile_parent() -> None:  # a script's `cmd &` ignores SIGINT; some libraries block it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "crmify.sandbox", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=hostile_parent,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip().rsplit(" ", 1)[-1]
        # Serving (an answer), so the SIGINT finds it in its loop.
        assert requests.get(url + "LeadStatuses", auth=("sandbox-key", ""), timeout=5).ok
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
