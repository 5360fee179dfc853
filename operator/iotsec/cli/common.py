"""What every `iotsec` command shares: exit codes, settings from the environment, printing."""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from iotsec.api.terms import Enforcement
from iotsec.model.config import Config, ConfigError
from iotsec.model.manifests import Document, clip
from iotsec.model.time import parse_rfc3339

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_CODES_EPILOG = """exit codes:
  0  everything checked passes (for check: is admitted; warn/audit-mode findings are printed but admitted)
  1  something fails (check: the webhook would deny it; validate: a resource is invalid)
  2  invalid input or usage: unreadable or malformed files, objects that are not Kubernetes objects, bad options"""
PROBLEMS_SHOWN = 5  # per object on one INVALID line; the rest are counted
OUTPUT_FORMATS = ("text", "json")
ENFORCEMENT_MODES = get_args(Enforcement)  # enforce, warn, audit: for --unassigned


def fail(command: str, message: object) -> None:
    """Print `iotsec COMMAND: MESSAGE` on stderr (the caller returns the exit code)."""
    print(f"iotsec {command}: {message}", file=sys.stderr)


def print_invalid(document: Document, problems: list[Any]) -> None:
    """One bounded stderr line for an object that cannot be judged: where it is and why (input quoted short)."""
    shown = "; ".join(clip(p) for p in problems[:PROBLEMS_SHOWN])
    more = f"; and {len(problems) - PROBLEMS_SHOWN} more" if len(problems) > PROBLEMS_SHOWN else ""
    print(f"INVALID {document.title} ({clip(document.where)}): {shown}{more}", file=sys.stderr)


def rfc3339_argument(text: str) -> datetime:
    """An argparse type: a bad time is a usage error (exit 2) naming what was wrong, not a traceback."""
    try:
        return parse_rfc3339(text, "time")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def settings(command: str) -> Config | None:
    """The process's settings from its environment, read once; None (and every problem printed) when invalid."""
    try:
        found = Config.from_env(os.environ)
    except ConfigError as error:
        fail(command, error)
        return None
    for name in found.unknown(os.environ):
        fail(command, f"warning: {name} is not an iotsec setting (ignored)")
    return found


def keep_cel_parser_cached() -> None:
    """Let the CEL parser be loaded from the user's cache (see private_cache_dir) instead of built each run."""
    from iotsec.api.celrules import cache_cel_parser_in

    folder = private_cache_dir()
    cache_cel_parser_in(folder / "cel-parser.lark" if folder else None)


def private_cache_dir() -> Path | None:
    """$XDG_CACHE_HOME/iotsec (~/.cache/iotsec), created if missing; None unless it is a directory of this user's
    that nobody else may write: what is cached there (lark's pickles) is loaded as code."""
    configured = Path(os.environ.get("XDG_CACHE_HOME", ""))
    try:
        folder = (configured if configured.is_absolute() else Path.home() / ".cache") / "iotsec"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except (OSError, RuntimeError):  # no home, read-only or not a directory: no cache, as before
        return None
    private = stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and not info.st_mode & 0o077
    return folder if private else None
