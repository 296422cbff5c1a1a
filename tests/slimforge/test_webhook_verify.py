"""The public webhook verifier against the Standard Webhooks test vector and an independent
HMAC computation."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from slimforge.contract.signing import WebhookVerificationError, sign_webhook, verify_webhook

# The Standard Webhooks specification's example.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
PAYLOAD = '{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def headers(signature: str = EXPECTED, timestamp: int = TIMESTAMP) -> dict[str, str]:
    return {
        "Webhook-Id": MSG_ID,  # header names are case-insensitive
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def test_the_spec_vector_holds_by_an_independent_computation() -> None:
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"{MSG_ID}.{TIMESTAMP}.{PAYLOAD}".encode()
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    assert "v1," + base64.b64encode(digest).decode() == EXPECTED
    assert sign_webhook(SECRET, MSG_ID, TIMESTAMP, PAYLOAD) == EXPECTED
    assert sign_webhook(SECRET, MSG_ID, TIMESTAMP, PAYLOAD.encode()) == EXPECTED


@pytest.mark.parametrize("payload", [PAYLOAD, PAYLOAD.encode()], ids=["str", "bytes"])
def test_a_valid_delivery_is_accepted_and_parsed(payload: str | bytes) -> None:
    assert verify_webhook(payload, headers(), SECRET, now=TIMESTAMP + 10) == {"test": 2432232314}


def test_one_matching_signature_among_several_is_enough() -> None:
    rotated = "v1,bm90LXRoZS1yaWdodC1zaWduYXR1cmU= v2,whatever " + EXPECTED
    assert verify_webhook(PAYLOAD, headers(rotated), SECRET, now=TIMESTAMP)


def test_a_changed_body_is_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook('{"test": 2432232315}', headers(), SECRET, now=TIMESTAMP)


def test_a_wrong_secret_is_refused() -> None:
    other = "whsec_" + base64.b64encode(b"another secret of 24 bytes!").decode()
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(PAYLOAD, headers(), other, now=TIMESTAMP)


@pytest.mark.parametrize("skew", [-301, 301, 10_000])
def test_a_stale_or_future_timestamp_is_refused(skew: int) -> None:
    with pytest.raises(WebhookVerificationError, match="from now"):
        verify_webhook(PAYLOAD, headers(), SECRET, now=TIMESTAMP + skew)
    # The tolerance is the receiver's choice.
    assert verify_webhook(PAYLOAD, headers(), SECRET, now=TIMESTAMP + skew, tolerance=20_000)


def test_a_moved_timestamp_breaks_the_signature() -> None:
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(PAYLOAD, headers(timestamp=TIMESTAMP + 1), SECRET, now=TIMESTAMP)


def test_missing_headers_and_bad_secrets_say_what_is_wrong() -> None:
    partial = headers()
    del partial["webhook-signature"]
    with pytest.raises(WebhookVerificationError, match="missing header webhook-signature"):
        verify_webhook(PAYLOAD, partial, SECRET, now=TIMESTAMP)
    with pytest.raises(WebhookVerificationError, match="whole number"):
        verify_webhook(PAYLOAD, {**headers(), "webhook-timestamp": "soon"}, SECRET)
    with pytest.raises(WebhookVerificationError, match="base64"):
        verify_webhook(PAYLOAD, headers(), "whsec_not*base64", now=TIMESTAMP)


def test_the_verifier_is_standard_library_only() -> None:
    import ast
    import sys
    from pathlib import Path

    import slimforge.contract.signing as module

    tree = ast.parse(Path(module.__file__).read_text())
    roots = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    roots |= {
        n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
    }
    assert roots <= set(sys.stdlib_module_names) | {"__future__"}, roots
