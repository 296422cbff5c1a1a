"""Symmetric encryption of stored secrets (Fernet: AES-128-CBC + HMAC-SHA256, with a timestamp).

The key comes from ``Settings.secret_key``. Unset, the embedded mode creates a random one in
``home/secret.key`` (mode 0600) on first use; a deployment with several machines must set
``SLIMFORGE_SECRET_KEY`` to the same value on the API and every worker.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from slimforge.app.settings import Settings

__all__ = ["SecretBox"]


def _key_material(settings: Settings) -> str:
    if settings.secret_key:
        return settings.secret_key
    path: Path = settings.home / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


class SecretBox:
    """Encrypts and decrypts short secrets with the service's key."""

    def __init__(self, settings: Settings) -> None:
        # Any string works as key material: hash it to the 32 bytes Fernet wants.
        digest = hashlib.sha256(_key_material(settings).encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def encrypt(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The secret; ValueError when it was encrypted with another key (a changed key)."""
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise ValueError(
                "a stored credential cannot be decrypted with this service's secret key "
                "(was SLIMFORGE_SECRET_KEY changed?); set the credential again"
            ) from None
