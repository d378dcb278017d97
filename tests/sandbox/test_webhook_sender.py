"""The sandboxes' webhooks over real HTTP: bodies, signatures checked by the documented formulas,
Basic auth, retries and their limits, the delivery log, settings, and a prompt stop."""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import hmac
import re
import socket
import time
from typing import Any

import pytest
import requests

from crmify.sandbox import Faults, SandboxServer
from crmify.sandbox.cli import add_arguments, build_server
from crmify.sandbox.hubspot import HubSpotSandbox

SECRET = "app-secret-5f1c"
FAST = {"retry_delays": [0.05], "timeout": 5}


def control(server: Any, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, server.control_url + path, timeout=10, **kwargs)


def configure(server: Any, **settings: Any) -> dict[str, Any]:
    answer = control(server, "PUT", "webhooks", json=settings)
    assert answer.status_code == 200, answer.text
    return answer.json()


def deliveries(server: Any) -> list[dict[str, Any]]:
    return control(server, "GET", "webhooks").json()["deliveries"]


def wait_until(test: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def hub(hubspot_sandbox: HubSpotSandbox) -> HubSpotSandbox:
    hubspot_sandbox.set_faults(requests_per_second=None)
    return hubspot_sandbox


def contact(server: HubSpotSandbox, **properties: str) -> str:
    return str(server.add_contact({"email": "ada@example.com", **properties})["id"])


def edit(server: Any, lead_id: Any, **body: Any) -> requests.Response:
    answer = control(server, "POST", f"leads/{lead_id}/edit", json=body)
    assert answer.status_code == 200, answer.text
    return answer


# -- HubSpot: bodies and signatures -------------------------------------------------------------------


def test_a_salespersons_edit_reaches_the_url_as_hubspot_events_signed_v3(hub, receiver):
    lead_id = contact(hub)
    configure(hub, url=receiver.url, secret=SECRET)
    edit(hub, lead_id, fields={"hs_lead_status": "UNQUALIFIED", "lifecyclestage": "lead"})

    (request,) = receiver.wait_for(1)
    assert request.path == "/crm/webhook/?site=demo"
    assert request.headers["content-type"] == "application/json"
    timestamp = request.headers["x-hubspot-request-timestamp"]
    assert abs(int(timestamp) - time.time() * 1000) < 60_000
    # HubSpot's documented v3 formula, computed here from scratch.
    source = "POST" + receiver.url + request.body.decode() + timestamp
    expected = base64.b64encode(
        hmac.new(SECRET.encode(), source.encode(), hashlib.sha256).digest()
    ).decode()
    assert request.headers["x-hubspot-signature-v3"] == expected
    events = request.json()
    assert [(e["propertyName"], e["propertyValue"]) for e in events] == [
        ("hs_lead_status", "UNQUALIFIED"),
        ("lifecyclestage", "lead"),
    ]
    for event in events:
        assert event["objectId"] == int(lead_id)
        assert event["subscriptionType"] == "contact.propertyChange"
        assert event["changeSource"] == "CRM_UI"
        assert event["attemptNumber"] == 0
        assert abs(event["occurredAt"] - time.time() * 1000) < 60_000
        assert {"eventId", "subscriptionId", "portalId", "appId"} <= set(event)
    assert events[0]["eventId"] != events[1]["eventId"]


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_older_signature_versions_follow_their_formulas(hub, receiver, version):
    lead_id = contact(hub)
    configure(hub, url=receiver.url, secret=SECRET, signature_version=version)
    edit(hub, lead_id, status="Unqualified")

    (request,) = receiver.wait_for(1)
    body = request.body.decode()
    source = SECRET + ("POST" + receiver.url if version == "v2" else "") + body
    assert request.headers["x-hubspot-signature"] == hashlib.sha256(source.encode()).hexdigest()
    assert request.headers["x-hubspot-signature-version"] == version
    assert "x-hubspot-signature-v3" not in request.headers
    assert request.json()[0]["propertyValue"] == "UNQUALIFIED"


def test_a_body_signed_with_another_secret_does_not_verify(hub, receiver):
    lead_id = contact(hub)
    configure(hub, url=receiver.url, secret="the-real-secret")
    edit(hub, lead_id, status="Open")
    (request,) = receiver.wait_for(1)
    source = (
        "POST"
        + receiver.url
        + request.body.decode()
        + request.headers["x-hubspot-request-timestamp"]
    )
    forged = base64.b64encode(hmac.new(b"a-guess", source.encode(), hashlib.sha256).digest())
    assert request.headers["x-hubspot-signature-v3"] != forged.decode()


def test_with_batch_off_each_event_is_its_own_request(hub, receiver):
    lead_id = contact(hub)
    configure(hub, url=receiver.url, secret=SECRET, batch=False)
    edit(hub, lead_id, fields={"hs_lead_status": "OPEN", "jobtitle": "CTO"})
    first, second = receiver.wait_for(2)
    assert [len(first.json()), len(second.json())] == [1, 1]
    assert {first.json()[0]["propertyName"], second.json()[0]["propertyName"]} == {
        "hs_lead_status",
        "jobtitle",
    }


def test_changes_made_through_the_api_come_back_as_integration_events(hub, receiver):
    configure(hub, url=receiver.url, secret=SECRET)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {hub.token}"
    created = session.post(
        hub.url + "/crm/v3/objects/contacts",
        json={"properties": {"email": "api@example.com"}},
        timeout=5,
    ).json()
    session.patch(
        hub.url + f"/crm/v3/objects/contacts/{created['id']}",
        json={"properties": {"hs_lead_status": "NEW"}},
        timeout=5,
    ).raise_for_status()
    events = [event for request in receiver.wait_for(2) for event in request.json()]
    assert [(e["subscriptionType"], e["changeSource"]) for e in events] == [
        ("contact.creation", "INTEGRATION"),
        ("contact.propertyChange", "INTEGRATION"),
    ]
    assert events[1]["propertyName"] == "hs_lead_status"


def test_api_changes_send_nothing_when_webhooks_for_api_changes_is_off(hub, receiver):
    lead_id = contact(hub)
    configure(hub, url=receiver.url, webhooks_for_api_changes=False)
    requests.patch(
        hub.url + f"/crm/v3/objects/contacts/{lead_id}",
        json={"properties": {"jobtitle": "API"}},
        headers={"Authorization": f"Bearer {hub.token}"},
        timeout=5,
    ).raise_for_status()
    edit(hub, lead_id, fields={"jobtitle": "Salesperson"})
    # The sender is one queue in order: the salesperson's event arriving alone proves the API's
    # change sent nothing.
    (request,) = receiver.wait_for(1)
    assert [e["propertyValue"] for e in request.json()] == ["Salesperson"]
    assert hub.webhooks.wait_idle(5) and len(receiver.received) == 1


def test_an_unchanged_value_sends_no_event(hub, receiver):
    lead_id = contact(hub, jobtitle="CTO")
    configure(hub, url=receiver.url)
    edit(hub, lead_id, fields={"jobtitle": "CTO"})
    edit(hub, lead_id, fields={"jobtitle": "CEO"})
    (request,) = receiver.wait_for(1)
    assert [e["propertyValue"] for e in request.json()] == ["CEO"]


# -- Insightly: the workflow webhook ------------------------------------------------------------------


def test_insightly_posts_the_edited_lead_with_basic_auth_and_dotnet_dates(sandbox, receiver):
    lead = sandbox.add_lead({"LAST_NAME": "Lovelace", "EMAIL": "ada@example.com"})
    configure(sandbox, url=receiver.url, username="crm-hook", password="pa:ss")
    answer = edit(sandbox, lead["LEAD_ID"], status="Disqualified").json()

    (request,) = receiver.wait_for(1)
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Basic" and base64.b64decode(token).decode() == "crm-hook:pa:ss"
    assert not any(name.startswith("x-hubspot") for name in request.headers)
    entity = request.json()["entity"]
    assert entity["LEAD_ID"] == lead["LEAD_ID"]
    assert entity["LEAD_STATUS_ID"] == answer["LEAD_STATUS_ID"]
    assert entity["EMAIL"] == "ada@example.com"
    # "/Date(<ms since the epoch>+0000)/" for the "yyyy-MM-dd HH:mm:ss" UTC the API reads.
    for name in ("DATE_UPDATED_UTC", "DATE_CREATED_UTC"):
        match = re.fullmatch(r"/Date\((\d+)\+0000\)/", entity[name])
        assert match, entity[name]
        expected = calendar.timegm(time.strptime(answer[name], "%Y-%m-%d %H:%M:%S"))
        assert int(match[1]) == expected * 1000
    assert entity["CONVERTED_DATE_UTC"] is None


def test_insightly_sends_one_request_per_lead_created_through_the_api(sandbox, receiver):
    configure(sandbox, url=receiver.url)
    session = requests.Session()
    session.auth = (sandbox.api_key, "")
    for name in ("One", "Two"):
        session.post(sandbox.url + "Leads", json={"LAST_NAME": name}, timeout=5).raise_for_status()
    requests_ = receiver.wait_for(2)
    assert [r.json()["entity"]["LAST_NAME"] for r in requests_] == ["One", "Two"]
    assert "authorization" not in requests_[0].headers  # no username configured


def test_a_secret_for_insightly_or_basic_auth_for_hubspot_is_refused(sandbox, hub):
    answer = control(sandbox, "PUT", "webhooks", json={"url": "http://x.test/", "secret": "s"})
    assert answer.status_code == 400 and "does not sign" in answer.json()["Message"]
    answer = control(hub, "PUT", "webhooks", json={"username": "u", "password": "p"})
    assert answer.status_code == 400 and "signs its webhooks" in answer.json()["Message"]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"url": "ftp://example.com/"}, "http(s) URL"),
        ({"signature_version": "v4"}, "signature_version"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"retry_delays": []}, "retry_delays"),
        ({"retry_delays": [-1]}, "retry_delays"),
        ({"batch": "yes"}, "batch"),
        ({"colour": "red"}, "unknown webhook setting(s): colour"),
    ],
)
def test_bad_webhook_settings_are_a_400_naming_them(hub, settings, words):
    answer = control(hub, "PUT", "webhooks", json=settings)
    assert answer.status_code == 400 and words in answer.json()["Message"]
    assert control(hub, "GET", "webhooks").json()["config"]["url"] is None  # nothing kept


def test_the_report_never_shows_a_secret_or_password(sandbox, hub):
    configure(hub, url="http://127.0.0.1:9/", secret=SECRET)
    configure(sandbox, url="http://127.0.0.1:9/", username="u", password="hunter2-pw")
    hub_text, insightly_text = (control(s, "GET", "webhooks").text for s in (hub, sandbox))
    assert SECRET not in hub_text and "hunter2-pw" not in insightly_text
    assert control(hub, "GET", "webhooks").json()["config"]["secret"] == "set"


def test_reset_and_delete_go_back_to_the_first_settings_and_forget_the_log(hub, receiver):
    lead_id = contact(hub)
    configure(hub, url=receiver.url)
    edit(hub, lead_id, status="Open")
    receiver.wait_for(1)
    wait_until(lambda: deliveries(hub) and deliveries(hub)[0]["state"] == "delivered")
    assert control(hub, "DELETE", "webhooks").json() == {
        "config": hub.webhooks.default_config.to_dict(),
        "pending": 0,
        "deliveries": [],
    }
    configure(hub, url=receiver.url)
    control(hub, "POST", "reset")
    assert control(hub, "GET", "webhooks").json()["config"]["url"] is None


# -- retries ------------------------------------------------------------------------------------------


def test_a_500_is_retried_with_the_attempt_number_moved_on(hub, receiver):
    lead_id = contact(hub)
    receiver.statuses = [500, 503]
    configure(hub, url=receiver.url, secret=SECRET, **FAST)
    edit(hub, lead_id, status="Open")

    first, second, third = (r.json() for r in receiver.wait_for(3))
    assert [b[0]["attemptNumber"] for b in (first, second, third)] == [0, 1, 2]
    assert first[0]["eventId"] == third[0]["eventId"]  # the same event, sent again
    assert hub.webhooks.wait_idle(10)
    (delivery,) = deliveries(hub)
    assert delivery["state"] == "delivered"
    assert [a["status"] for a in delivery["attempts"]] == [500, 503, 200]
    assert delivery["last_status"] == 200 and delivery["last_error"] is None


def test_each_retry_is_signed_afresh(hub, receiver):
    lead_id = contact(hub)
    receiver.statuses = [500]
    configure(hub, url=receiver.url, secret=SECRET, retry_delays=[0.01])
    edit(hub, lead_id, status="Open")
    for request in receiver.wait_for(2):
        source = (
            "POST"
            + receiver.url
            + request.body.decode()
            + request.headers["x-hubspot-request-timestamp"]
        )
        digest = hmac.new(SECRET.encode(), source.encode(), hashlib.sha256).digest()
        assert request.headers["x-hubspot-signature-v3"] == base64.b64encode(digest).decode()


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405])
def test_hubspots_final_statuses_are_not_retried(hub, receiver, status):
    lead_id = contact(hub)
    receiver.statuses = [status]
    configure(hub, url=receiver.url, **FAST)
    edit(hub, lead_id, status="Open")
    receiver.wait_for(1)
    assert hub.webhooks.wait_idle(10)
    time.sleep(0.3)  # several retry delays: a retry would have come by now
    assert len(receiver.received) == 1
    (delivery,) = deliveries(hub)
    assert delivery["state"] == "failed" and delivery["last_status"] == status


def test_retries_stop_after_max_attempts(hub, receiver):
    lead_id = contact(hub)
    receiver.statuses = [503] * 10
    configure(hub, url=receiver.url, max_attempts=3, **FAST)
    edit(hub, lead_id, status="Open")
    assert hub.webhooks.wait_idle(15)
    assert [r.json()[0]["attemptNumber"] for r in receiver.received] == [0, 1, 2]
    (delivery,) = deliveries(hub)
    assert delivery["state"] == "failed" and len(delivery["attempts"]) == 3


def test_a_refused_connection_is_retried_until_the_site_is_up(sandbox, receiver_on):
    port = free_port()
    lead = sandbox.add_lead({"LAST_NAME": "Waiting"})
    configure(sandbox, url=f"http://127.0.0.1:{port}/hook", retry_delays=[0.5])
    edit(sandbox, lead["LEAD_ID"], fields={"TITLE": "CEO"})
    wait_until(lambda: deliveries(sandbox)[0]["attempts"])
    first = deliveries(sandbox)[0]
    assert first["state"] == "retrying" and first["attempts"][0]["status"] is None
    assert "ConnectionRefused" in first["attempts"][0]["error"]

    site = receiver_on(port)
    (request,) = site.wait_for(1)
    assert request.json()["entity"]["TITLE"] == "CEO"
    assert sandbox.webhooks.wait_idle(10)
    assert deliveries(sandbox)[0]["state"] == "delivered"


def test_a_timeout_is_retried(hub, receiver):
    lead_id = contact(hub)
    receiver.hold = 2.0
    configure(hub, url=receiver.url, timeout=0.3, retry_delays=[0.05], max_attempts=2)
    edit(hub, lead_id, status="Open")
    assert hub.webhooks.wait_idle(15)
    assert len(receiver.received) == 2
    (delivery,) = deliveries(hub)
    assert delivery["state"] == "failed"
    assert all("timed out" in attempt["error"] for attempt in delivery["attempts"])


# -- stopping -----------------------------------------------------------------------------------------


def stops_promptly(server: Any) -> bool:
    """Whether ``stop()`` returned within 3 s with the sending thread ended."""
    started = time.monotonic()
    server.stop()
    return time.monotonic() - started < 3 and not server.webhooks.running


def test_stop_is_prompt_with_a_request_in_flight(receiver):
    receiver.hold = 30.0
    server = HubSpotSandbox(faults=Faults(requests_per_second=None)).start()
    configure(server, url=receiver.url, timeout=30)
    edit(server, contact(server), status="Open")
    receiver.wait_for(1)
    assert stops_promptly(server)


def test_stop_is_prompt_with_a_retry_waiting(receiver):
    receiver.statuses = [500]
    server = SandboxServer(faults=Faults(requests_per_second=None)).start()
    configure(server, url=receiver.url, retry_delays=[600])
    edit(server, server.add_lead({"LAST_NAME": "X"})["LEAD_ID"], status="Contacted")
    wait_until(lambda: deliveries(server)[0]["state"] == "retrying")
    assert stops_promptly(server)


def test_a_stopped_sandbox_queues_nothing(receiver):
    server = HubSpotSandbox()
    server.configure_webhooks(url=receiver.url)
    server.stop()
    server.add_contact({"email": "late@example.com"})
    assert server.webhooks.pending() == 0 and server.webhooks.deliveries() == []


# -- the command line ---------------------------------------------------------------------------------


def parse(*argv: str) -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return vars(parser.parse_args(["--port", "0", *argv]))


def test_the_cli_flags_configure_the_webhooks(receiver):
    server = build_server(
        parse(
            "--crm",
            "hubspot",
            "--webhook-url",
            receiver.url,
            "--webhook-secret",
            SECRET,
            "--webhook-signature",
            "v1",
            "--webhook-max-attempts",
            "4",
            "--webhook-retry-delays",
            "0.5,2",
            "--no-webhooks-for-api-changes",
        )
    )
    try:
        config = server.webhooks.config
        assert (config.url, config.secret, config.signature_version) == (receiver.url, SECRET, "v1")
        assert (config.max_attempts, config.retry_delays) == (4, (0.5, 2.0))
        assert config.webhooks_for_api_changes is False
        server.reset()
        assert server.webhooks.config == config  # the flags are the settings reset goes back to
    finally:
        server.stop()


def test_the_cli_refuses_a_secret_for_insightly():
    with pytest.raises(ValueError, match="does not sign"):
        build_server(parse("--webhook-url", "http://x.test/", "--webhook-secret", "s"))
