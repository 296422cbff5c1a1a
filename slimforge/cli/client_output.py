"""Output and error handling of the client commands: one-line messages, JSON, exit codes.

Exit codes: 0 success; 1 error (the job failed, an API error, a checksum mismatch); 2 the job
was cancelled (and argparse's usage errors); 3 ``wait`` timed out; 4 the server cannot be
reached; 5 the API key was refused; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "EXIT_AUTH",
    "EXIT_CANCELLED",
    "EXIT_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "err",
    "guarded",
    "print_json",
]

EXIT_FAILED, EXIT_CANCELLED, EXIT_TIMEOUT, EXIT_UNREACHABLE, EXIT_AUTH = 1, 2, 3, 4, 5


def err(message: str) -> None:
    print(f"slimforge: {message}", file=sys.stderr, flush=True)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str), flush=True)


def guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the SDK's errors into one-line messages and exit codes (no tracebacks)."""

    def run(args: argparse.Namespace) -> int:
        from slimforge.client import (
            APIError,
            AuthenticationError,
            ConnectionFailed,
            JobCancelled,
            JobFailed,
            SlimforgeError,
            WaitTimeout,
        )

        code, kind = EXIT_FAILED, "error"
        try:
            return command(args)
        except KeyboardInterrupt:
            err("interrupted")
            return 130
        except AuthenticationError as exc:
            code, kind = EXIT_AUTH, "unauthorized"
            message = (
                f"the API key was refused: {exc.message} (set SLIMFORGE_API_KEY or run "
                "'slimforge config --api-key KEY')"
            )
        except ConnectionFailed as exc:
            code, kind = EXIT_UNREACHABLE, "unreachable"
            message = f"{exc} (is the server running? Check SLIMFORGE_URL or 'slimforge config')"
        except APIError as exc:
            kind, message = exc.code, str(exc)
        except WaitTimeout as exc:
            code, kind, message = EXIT_TIMEOUT, "timeout", str(exc)
        except JobCancelled as exc:
            code, kind, message = EXIT_CANCELLED, "cancelled", str(exc)
        except JobFailed as exc:
            kind, message = "failed", str(exc)
        except (SlimforgeError, ValueError, OSError) as exc:
            message = str(exc)
        if getattr(args, "json", False):
            print_json({"error": {"code": kind, "message": message}})
        err(message)
        return code

    return run
