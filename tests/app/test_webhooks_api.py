"""Webhook routes: the signing secret (shown once, encrypted at rest), tenant defaults, the
``webhook`` field of a job, URL safety, and the delivery log's tenant scoping."""

from __future__ import annotations

import base64
import ipaddress

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from slimforge.app.credentials.crypto import SecretBox
from slimforge.app.settings import Settings
from slimforge.app.webhooks.models import WebhookConfig
from slimforge.app.webhooks.safety import (
    UnsafeWebhookUrl,
    WebhookHostUnresolvable,
    check_webhook_url,
)
from slimforge.app.webhooks.service import create_deliveries
from tests.app.test_jobs_api import body

PUBLIC = "https://93.184.215.14/hooks"  # a public address literal: no DNS needed


def config_row(api: TestClient) -> WebhookConfig:
    with api.app.state.session_factory() as session:
        (row,) = session.scalars(select(WebhookConfig))
        return row


def test_the_secret_is_shown_once_and_stored_encrypted(
    api: TestClient, auth, settings: Settings
) -> None:
    h = auth()
    r = api.post("/v1/webhooks/secret", headers=h)
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    row = config_row(api)
    assert row.secret_encrypted and secret not in row.secret_encrypted
    assert SecretBox(settings).decrypt(row.secret_encrypted) == secret
    status = api.get("/v1/webhooks/default", headers=h)
    assert status.json()["secret_configured"] and secret not in status.text
    assert status.json()["secret"] is None
    # Rotating replaces it.
    rotated = api.post("/v1/webhooks/secret", headers=h).json()["secret"]
    assert rotated != secret
    assert SecretBox(settings).decrypt(config_row(api).secret_encrypted or "") == rotated
    assert not api.get("/v1/webhooks/default", headers=auth("other")).json()["secret_configured"]


def test_the_default_webhook_per_tenant(api: TestClient, auth) -> None:
    acme, other = auth("acme"), auth("other")
    assert api.get("/v1/webhooks/default", headers=acme).json()["configured"] is False
    r = api.put("/v1/webhooks/default", json={"url": PUBLIC}, headers=acme)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["configured"] and first["url"] == PUBLIC
    assert first["events"] == ["job.succeeded", "job.failed", "job.cancelled"]
    assert first["secret"].startswith("whsec_")  # created with the first default, shown once
    r = api.put(
        "/v1/webhooks/default", json={"url": PUBLIC, "events": ["job.started"]}, headers=acme
    )
    assert r.json()["events"] == ["job.started"] and r.json()["secret"] is None
    got = api.get("/v1/webhooks/default", headers=acme).json()
    assert got["url"] == PUBLIC and got["secret"] is None and got["secret_configured"]
    assert api.get("/v1/webhooks/default", headers=other).json()["configured"] is False
    assert api.delete("/v1/webhooks/default", headers=other).status_code == 404
    assert api.delete("/v1/webhooks/default", headers=acme).status_code == 204
    assert api.delete("/v1/webhooks/default", headers=acme).status_code == 404
    got = api.get("/v1/webhooks/default", headers=acme).json()
    assert not got["configured"] and got["secret_configured"]  # the secret stays


def test_a_job_webhook_needs_a_secret_and_keeps_default_events(
    api: TestClient, auth, text_files
) -> None:
    h = auth()
    r = api.post("/v1/jobs", json=body(text_files, webhook={"url": PUBLIC}), headers=h)
    assert r.status_code == 422 and "POST /v1/webhooks/secret" in r.text
    api.post("/v1/webhooks/secret", headers=h)
    hook = {"url": PUBLIC, "events": ["job.failed", "job.started", "job.failed"]}
    r = api.post("/v1/jobs", json=body(text_files, webhook=hook), headers=h)
    assert r.status_code == 202, r.text
    assert r.json()["request"]["webhook"] == {
        "url": PUBLIC,
        "events": ["job.failed", "job.started"],
    }
    r = api.post("/v1/jobs", json=body(text_files, webhook={"url": PUBLIC}), headers=h)
    assert r.json()["request"]["webhook"]["events"] == [
        "job.succeeded",
        "job.failed",
        "job.cancelled",
    ]


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"url": "ftp://93.184.215.14/x"}, "must be http:// or https://"),
        ({"url": "93.184.215.14/x"}, "must be http:// or https://"),
        ({"url": "https://user:pw@93.184.215.14/x"}, "credentials"),
        ({"url": PUBLIC, "events": ["job.exploded"]}, "webhook.events"),
        ({"url": PUBLIC, "events": []}, "webhook.events"),
        ({"url": PUBLIC, "secret": "x"}, "webhook.secret"),
    ],
    ids=["ftp", "no-scheme", "credentials", "unknown-event", "no-events", "extra-field"],
)
def test_malformed_webhooks_are_refused(
    api: TestClient, auth, text_files, hook: dict[str, object], message: str
) -> None:
    h = auth()
    api.post("/v1/webhooks/secret", headers=h)
    r = api.post("/v1/jobs", json=body(text_files, webhook=hook), headers=h)
    assert r.status_code == 422 and message in r.text, r.text


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/hook", "not a public"),
    ],
)
def test_private_addresses_are_refused_unless_allowed(
    api: TestClient, auth, settings: Settings, text_files, url: str, reason: str
) -> None:
    h = auth()
    api.post("/v1/webhooks/secret", headers=h)
    r = api.post("/v1/jobs", json=body(text_files, webhook={"url": url}), headers=h)
    assert r.status_code == 422, r.text
    message = r.json()["error"]["message"]
    assert message.startswith("webhook.url: ") and reason in message
    assert "SLIMFORGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES" in message
    r = api.put("/v1/webhooks/default", json={"url": url}, headers=h)
    assert r.status_code == 422 and reason in r.text
    settings.webhook_allow_private_addresses = True  # the app's own settings object
    r = api.post("/v1/jobs", json=body(text_files, webhook={"url": url}), headers=h)
    assert r.status_code == 202, r.text
    assert api.put("/v1/webhooks/default", json={"url": url}, headers=h).status_code == 200


def test_the_url_check_resolves_names_and_returns_the_addresses() -> None:
    assert check_webhook_url(PUBLIC, allow_private=False) == [ipaddress.ip_address("93.184.215.14")]
    assert check_webhook_url("http://localhost/x", allow_private=True) == []
    with pytest.raises(WebhookHostUnresolvable, match="does not resolve"):
        check_webhook_url("https://no-such-host.invalid/x", allow_private=False)
    with pytest.raises(UnsafeWebhookUrl, match="invalid port"):
        check_webhook_url("https://93.184.215.14:99999/x", allow_private=False)


def test_the_delivery_log_is_per_tenant(api: TestClient, auth, text_files) -> None:
    h = auth()
    api.post("/v1/webhooks/secret", headers=h)
    hook = {"url": PUBLIC, "events": ["job.started"]}
    job_id = api.post("/v1/jobs", json=body(text_files, webhook=hook), headers=h).json()["id"]
    assert api.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=h).json() == {"items": []}
    with api.app.state.session_factory() as session:
        assert create_deliveries(session, job_id=job_id, event="job.succeeded") == []
        (delivery_id,) = create_deliveries(session, job_id=job_id, event="job.started")
    (item,) = api.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=h).json()["items"]
    assert item["id"] == delivery_id and item["event_type"] == "job.started"
    assert item["state"] == "pending" and item["attempt"] == 1 and item["url"] == PUBLIC
    assert item["webhook_id"].startswith("msg_") and item["status_code"] is None
    for other in (auth("other"), h):
        r = api.get("/v1/jobs/job_nope/webhook-deliveries", headers=other)
        assert r.status_code == 404
    assert api.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=auth("other")).status_code == (
        404
    )
    assert api.get(f"/v1/jobs/{job_id}/webhook-deliveries").status_code == 401


def test_cancelling_a_queued_job_records_its_cancelled_webhook(
    api: TestClient, auth, text_files
) -> None:
    """A queued job ends in the API, not on a worker: the API records the delivery."""
    h = auth()
    api.post("/v1/webhooks/secret", headers=h)
    hook = {"url": PUBLIC, "events": ["job.cancelled"]}
    body = {
        "model": {"id": "org/model"},
        "target": {"ratio": 0.5},
        "method": {"name": "svd"},
        "calibration": {"path": str(text_files["calibration"])},
        "webhook": hook,
    }
    job_id = api.post("/v1/jobs", json=body, headers=h).json()["id"]
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=h).json()["status"] == "cancelled"
    deliveries = api.get(f"/v1/jobs/{job_id}/webhook-deliveries", headers=h).json()["items"]
    assert [(d["event_type"], d["url"], d["attempt"]) for d in deliveries] == [
        ("job.cancelled", PUBLIC, 1)
    ]
