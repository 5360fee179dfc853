"""`iotsec backup`: one restic operation of a BackupPolicy, as its Jobs run it (or by hand)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    backup = sub.add_parser(
        "backup",
        help="run one restic operation of a BackupPolicy (what its Jobs run; also by hand)",
        description="init: create the repositories that do not exist yet (the only operation that creates one). "
        "run: back up, copy off-site, apply retention; a missing repository fails it. verify|restore|drill: that "
        "operation. Options as `python -m iotsec.servers.backupjob.runner -h`.",
    )
    backup.add_argument("operation", choices=("run", "init", "verify", "restore", "drill"))
    backup.add_argument("options", nargs=argparse.REMAINDER, help="--config CONFIG.json [--result FILE] ...")
    backup.set_defaults(handler=_backup)


def _backup(args: argparse.Namespace) -> int:
    from iotsec.servers.backupjob import runner

    # `run` never creates a repository: a missing one may be an unmounted volume or an emptied bucket, and a fresh
    # repository there would report success while every earlier snapshot is out of reach
    return runner.main(["backup" if args.operation == "run" else args.operation, *args.options])
