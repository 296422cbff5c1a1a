"""Sign and verify slimforge webhooks (the Standard Webhooks scheme, https://www.standardwebhooks.com).

Every delivery carries three headers:

* ``webhook-id``: the event's id, the same on every retry (deduplicate on it);
* ``webhook-timestamp``: when this attempt was sent, in Unix seconds;
* ``webhook-signature``: ``v1,<base64 HMAC-SHA256>`` of ``"{id}.{timestamp}.{body}"`` keyed
  with the tenant's secret (``whsec_<base64>``: the base64 part, decoded, is the key). Several
  space-separated signatures may come (a secret rotation); one match is enough.

A receiver calls :func:`verify_webhook` with the raw request body, the headers and the secret.
Standard library only, so receivers need nothing else installed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["SECRET_PREFIX", "WebhookVerificationError", "sign_webhook", "verify_webhook"]

SECRET_PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """The delivery is not authentic (missing headers, bad signature) or is too old or new."""


def _key(secret: str) -> bytes:
    """The HMAC key: the base64 part of ``whsec_<base64>``, decoded."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookVerificationError("the secret is not 'whsec_' followed by base64") from None


def _as_bytes(payload: bytes | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else payload


def sign_webhook(secret: str, msg_id: str, timestamp: int, payload: bytes | str) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of one delivery."""
    signed = f"{msg_id}.{timestamp}.".encode() + _as_bytes(payload)
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance: int = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and timestamp; returns the parsed JSON body.

    ``payload`` must be the raw body as received (re-serialised JSON would not match).
    ``tolerance``: seconds the timestamp may differ from ``now`` either way (replay defence).
    Raises :class:`WebhookVerificationError` when anything is wrong.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        msg_id = lowered["webhook-id"]
        stamp = lowered["webhook-timestamp"]
        signatures = lowered["webhook-signature"]
    except KeyError as exc:
        raise WebhookVerificationError(f"missing header {exc.args[0]}") from None
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a whole number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"webhook-timestamp is more than {tolerance} s from now (a replay or a wrong clock)"
        )
    expected = sign_webhook(secret, msg_id, timestamp, payload).encode()
    # Constant-time comparison with every offered signature; versions other than v1 are skipped.
    if not any(
        candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected)
        for candidate in signatures.split()
    ):
        raise WebhookVerificationError("no signature matches (wrong secret or altered body)")
    try:
        parsed: dict[str, Any] = json.loads(_as_bytes(payload))
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    return parsed
