"""What every `iotsec` command shares: exit codes, settings from the environment, printing."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, get_args

from iotsec.api.securitydomain import Enforcement
from iotsec.model.config import Config, ConfigError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
OUTPUT_FORMATS = ("text", "json")
ENFORCEMENT_MODES = get_args(Enforcement)  # enforce, warn, audit: for --unassigned


def fail(command: str, message: object) -> None:
    """Print `iotsec COMMAND: MESSAGE` on stderr (the caller returns the exit code)."""
    print(f"iotsec {command}: {message}", file=sys.stderr)


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
