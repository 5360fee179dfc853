"""`iotsec backup`: one restic operation of a BackupPolicy, as its Jobs run it (or by hand)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    backup = sub.add_parser(
        "backup",
        help="run one restic operation of a BackupPolicy (what its Jobs run; also by hand)",
        description="run: initialise missing repositories, back up, copy off-site, apply retention. "
        "init|verify|restore|drill: that operation alone. Options as `python -m iotsec.servers.backupjob.runner -h`.",
    )
    backup.add_argument("operation", choices=("run", "init", "verify", "restore", "drill"))
    backup.add_argument("options", nargs=argparse.REMAINDER, help="--config CONFIG.json [--result FILE] ...")
    backup.set_defaults(handler=_backup)


def _backup(args: argparse.Namespace) -> int:
    from iotsec.servers.backupjob import runner

    if args.operation != "run":
        return runner.main([args.operation, *args.options])
    # A scheduled run initialises what is missing first (a no-op `restic cat config` once the repositories exist).
    initialised = runner.main(["init", *args.options])
    if initialised != runner.EXIT_OK:
        return initialised
    return runner.main(["backup", *args.options])
