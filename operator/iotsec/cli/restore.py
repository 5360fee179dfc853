"""`iotsec restore`: a one-off restore Job for a BackupPolicy's snapshot (see `iotsec.services.restore`)."""

from __future__ import annotations

import argparse
from typing import Any

from iotsec.cli.common import EXIT_INVALID, EXIT_OK, fail, print_json


def register(sub: Any) -> None:
    restore = sub.add_parser(
        "restore", help="restore a BackupPolicy's snapshot into a new (or, on request, existing) claim"
    )
    restore.add_argument("policy", help="BackupPolicy name")
    restore.add_argument("-n", "--namespace", required=True)
    restore.add_argument("--snapshot", default="latest", help="snapshot id (default: latest)")
    restore.add_argument("--claim", help="the backed-up claim whose files to restore (default: --target-pvc)")
    restore.add_argument("--target-pvc", help="restore into this claim (default: a new claim POLICY-restore-TIME)")
    restore.add_argument("--overwrite", action="store_true", help="allow restoring over an existing claim")
    restore.add_argument("--size", default="10Gi", help="size of a new claim")
    restore.add_argument("--storage-class", help="StorageClass of a new claim")
    restore.add_argument(
        "--image", help="the iotsec image of the restore Job (default: the one the policy's backup CronJob runs)"
    )
    restore.set_defaults(handler=_restore)


def _restore(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import Kube
    from iotsec.services.restore import RestoreError, restore

    try:
        started = restore(
            Kube(),
            args.policy,
            args.namespace,
            args.snapshot,
            args.target_pvc,
            args.overwrite,
            args.size,
            args.storage_class,
            args.claim,
            args.image,
        )
    except RestoreError as exc:
        fail("restore", exc)
        return EXIT_INVALID
    print_json(started)
    return EXIT_OK
