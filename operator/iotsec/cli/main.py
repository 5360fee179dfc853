"""The `iotsec` command line: works without a cluster for everything but `run`.

One module per command (or family) in this package, each with a `register(sub)` that adds its subparser and sets
its handler; the handlers import what reaches the cluster (kopf, kubernetes, aiohttp, prometheus_client) only when
they run, so `validate`, `render` and `check` start fast and need no cluster. Only the module of the command being
run is imported (`iotsec check` loads none of `audit`'s, `report`'s, ... dependencies); `iotsec --help`, an unknown
command or no command at all load them all, so help and argparse's errors list every command.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from iotsec import __version__
from iotsec.cli.common import EXIT_OK, EXIT_USAGE
from iotsec.model.manifests import ManifestError

# in `iotsec --help` order: the modules under iotsec.cli that register the commands
COMMANDS = (
    "crds",
    "validate",
    "controls",
    "rules",
    "render",
    "run",
    "check",
    "webhook",
    "device",
    "rbac",
    "restore",
    "backup",
    "audit",
    "report",
)
OWNER = {"webhook-config": "webhook"}  # commands registered by a module of another name


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ManifestError as exc:
        print(f"iotsec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
    except (RecursionError, MemoryError) as exc:  # input beyond the bounds checked while loading
        print(f"iotsec: input too large or too deeply nested ({type(exc).__name__})", file=sys.stderr)
        return EXIT_USAGE


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of `command` alone when it is one (its module is the only one imported), else of every command."""
    owner = OWNER.get(command or "", command)
    modules = [owner] if owner in COMMANDS else COMMANDS
    parser = argparse.ArgumentParser(
        prog="iotsec",
        description="ITU-T X.1369 security controls for IoT service platforms on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=f"iotsec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in modules:
        importlib.import_module(f"iotsec.cli.{module}").register(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
