"""Where the client finds the server and its key: arguments, environment, config file.

Precedence: explicit arguments, then ``SLIMFORGE_URL`` / ``SLIMFORGE_API_KEY``, then the
config file (``$SLIMFORGE_CONFIG``, else ``$XDG_CONFIG_HOME/slimforge/config.toml``, else
``~/.config/slimforge/config.toml``), then the default URL ``http://127.0.0.1:8000``.
"""

from __future__ import annotations

import json
import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_URL",
    "ClientConfig",
    "config_path",
    "load_config",
    "resolve_config",
    "save_config",
]

DEFAULT_URL = "http://127.0.0.1:8000"
ENV_URL = "SLIMFORGE_URL"
ENV_KEY = "SLIMFORGE_API_KEY"
ENV_CONFIG = "SLIMFORGE_CONFIG"


@dataclass(frozen=True)
class ClientConfig:
    """The resolved settings and where each came from ("argument", "env", "file", "default")."""

    url: str
    api_key: str | None
    url_source: str
    api_key_source: str | None
    path: Path


def config_path() -> Path:
    """The config file's path (it need not exist)."""
    explicit = os.environ.get(ENV_CONFIG)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "slimforge" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, str]:
    """The config file's ``url`` and ``api_key`` (whichever are set); {} without a file."""
    path = path or config_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read the config file {path}: {exc}") from exc
    return {k: str(data[k]) for k in ("url", "api_key") if data.get(k)}


def save_config(
    *, url: str | None = None, api_key: str | None = None, path: Path | None = None
) -> Path:
    """Set ``url`` and/or ``api_key`` in the config file (others kept); written atomically,
    readable by the owner only. Returns the file's path."""
    path = path or config_path()
    values = load_config(path)
    if url is not None:
        values["url"] = url.rstrip("/")
    if api_key is not None:
        values["api_key"] = api_key
    path.parent.mkdir(parents=True, exist_ok=True)
    # JSON string escapes are valid TOML basic strings.
    text = "".join(f"{k} = {json.dumps(v)}\n" for k, v in sorted(values.items()))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("# slimforge client settings (slimforge config)\n" + text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_config(base_url: str | None = None, api_key: str | None = None) -> ClientConfig:
    """Combine arguments, environment and config file (in that order of precedence)."""
    path = config_path()
    env_url, env_key = os.environ.get(ENV_URL), os.environ.get(ENV_KEY)
    # The file is read only when something is left to take from it.
    needed = not (base_url or env_url) or not (api_key or env_key)
    file = load_config(path) if needed else {}
    if base_url:
        url, url_source = base_url, "argument"
    elif env_url:
        url, url_source = env_url, "env"
    elif file.get("url"):
        url, url_source = file["url"], "file"
    else:
        url, url_source = DEFAULT_URL, "default"
    key: str | None
    if api_key:
        key, key_source = api_key, "argument"
    elif env_key:
        key, key_source = env_key, "env"
    elif file.get("api_key"):
        key, key_source = file["api_key"], "file"
    else:
        key, key_source = None, None
    return ClientConfig(url.rstrip("/"), key, url_source, key_source, path)
