"""Admin commands of ``slimforge``: act on the configured database directly (no API key).

slimforge admin create-key --tenant T [--scopes read,submit] [--name N]
                          print a new API key (once); no scopes: admin
slimforge admin revoke-key --id ID      revoke a key (its id: GET /v1/keys)
slimforge admin set-quota --tenant T [--concurrent-jobs N] [--jobs-per-day N]
                          [--max-model-params N]   the tenant's own quotas (0: unlimited)
slimforge admin allow-remote-code --tenant T [--off]
                          let the tenant submit models loaded with trust_remote_code
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["add_admin_commands"]


@contextlib.contextmanager
def _admin_session() -> Iterator[Session]:
    """A session on the configured database (migrated first) for one admin command."""
    from slimforge.app.db import make_engine, make_session_factory, session_scope
    from slimforge.app.migrate import upgrade
    from slimforge.app.settings import Settings

    settings = Settings()
    upgrade(settings)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _create_key(args: argparse.Namespace) -> int:
    from slimforge.app.auth.service import create_api_key

    scopes = args.scopes.split(",") if args.scopes else None
    try:
        with _admin_session() as session:
            key = create_api_key(
                session, tenant_name=args.tenant, scopes=scopes, name=args.name or None
            )
    except ValueError as exc:  # an unknown scope, a name over 100 characters
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(key)
    print(
        f"# API key for tenant '{args.tenant}' (scopes: {args.scopes or 'admin'}): shown once, "
        "store it now.",
        file=sys.stderr,
    )
    return 0


def _revoke_key(args: argparse.Namespace) -> int:
    from slimforge.app.auth.service import revoke_key
    from slimforge.app.errors import NotFound

    try:
        with _admin_session() as session:
            revoke_key(session, key_id=args.id, tenant_id=None)
    except NotFound as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"API key {args.id} revoked")
    return 0


def _set_quota(args: argparse.Namespace) -> int:
    from slimforge.app.limits.quotas import set_tenant_quota

    try:
        with _admin_session() as session:
            set_tenant_quota(
                session,
                tenant_name=args.tenant,
                concurrent_jobs=args.concurrent_jobs,
                jobs_per_day=args.jobs_per_day,
                max_model_params=args.max_model_params,
            )
    except ValueError as exc:  # a negative value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"quotas of tenant '{args.tenant}' set (unset values: the server's defaults)")
    return 0


def _allow_remote_code(args: argparse.Namespace) -> int:
    from slimforge.app.auth.service import set_remote_code

    with _admin_session() as session:
        set_remote_code(session, tenant_name=args.tenant, allowed=not args.off)
    state = "may no longer" if args.off else "may now"
    print(f"tenant '{args.tenant}' {state} submit models loaded with trust_remote_code")
    return 0


def add_admin_commands(sub: Any) -> None:
    """Register ``slimforge admin …`` on the ``slimforge`` parser's subparsers."""
    admin = sub.add_parser("admin", help="administration").add_subparsers(
        dest="admin_command", required=True
    )
    p = admin.add_parser("create-key", help="create an API key for a tenant and print it")
    p.add_argument("--tenant", required=True)
    p.add_argument(
        "--scopes",
        help="comma-separated: read, submit (includes read), admin (includes both; the default)",
    )
    p.add_argument("--name", help="a label shown in GET /v1/keys")
    p.set_defaults(func=_create_key)
    p = admin.add_parser("revoke-key", help="revoke an API key by its id")
    p.add_argument("--id", required=True, help="the key's id (GET /v1/keys lists them)")
    p.set_defaults(func=_revoke_key)
    p = admin.add_parser("set-quota", help="set a tenant's quotas (omitted: the default)")
    p.add_argument("--tenant", required=True)
    for flag in ("--concurrent-jobs", "--jobs-per-day", "--max-model-params"):
        p.add_argument(flag, type=int, help="0: unlimited; omitted: the server's default")
    p.set_defaults(func=_set_quota)
    p = admin.add_parser(
        "allow-remote-code",
        help="let a tenant submit models loaded with their own code (trust_remote_code)",
    )
    p.add_argument("--tenant", required=True)
    p.add_argument("--off", action="store_true", help="forbid it again (the default)")
    p.set_defaults(func=_allow_remote_code)
