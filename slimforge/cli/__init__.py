"""The ``slimforge`` command: one entry for the client, the service and its administration.

Server commands (``slimforge.cli.server_commands``): serve, worker, migrate, fetch-demo-model,
demo. Admin commands (``slimforge.cli.admin_commands``): admin create-key | revoke-key |
set-quota | allow-remote-code. Client commands (``slimforge.cli.client_commands``, through the
SDK only): config, submit, status, wait, events, cancel, list, download, methods.

Server and admin commands take their settings from ``SLIMFORGE_*`` environment variables (see
``slimforge.app.settings.Settings``); each module imports the server only when its command runs,
so the client commands work with the SDK's dependencies alone.
"""

from __future__ import annotations

import argparse
import logging

from slimforge.cli.admin_commands import add_admin_commands
from slimforge.cli.client_commands import add_client_commands
from slimforge.cli.server_commands import add_server_commands

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimforge", description="Compression as a service for large language models."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_server_commands(sub)
    add_admin_commands(sub)
    add_client_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
