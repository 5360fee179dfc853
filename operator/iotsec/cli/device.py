"""`iotsec device issue|revoke|list`: device certificates of a tenant's device CA (see `iotsec.services.devices`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from iotsec.cli.common import EXIT_INVALID, EXIT_OK, EXIT_USAGE, fail, print_json


def register(sub: Any) -> None:
    device = sub.add_parser("device", help="issue, revoke and list device certificates of a tenant's device CA")
    actions = device.add_subparsers(dest="action", required=True, metavar="ACTION")
    release = argparse.ArgumentParser(add_help=False)
    release.add_argument(
        "--namespace",
        help="where the device CA Secret and registry are: the release namespace (default: where the tenant's "
        "status records them, else iotsec-system); issue and revoke refuse one other than the recorded home",
    )
    issue = actions.add_parser("issue", parents=[release], help="issue a certificate and key bound to a device id")
    issue.add_argument("--tenant", required=True, help="TenantIsolation name")
    issue.add_argument("--device-id", required=True)
    issue.add_argument("--class", dest="device_class", required=True, help="a deviceClasses name of the tenant")
    issue.add_argument("--manufacturer", required=True)
    issue.add_argument("--model", required=True)
    issue.add_argument("--out", type=Path, default=Path("."), help="folder for ID.crt, ID.key (0600), ca-bundle.crt")
    issue.set_defaults(handler=_issue)
    revoke = actions.add_parser("revoke", parents=[release], help="revoke a device's certificates (CRLs follow)")
    revoke.add_argument("--tenant", required=True)
    target = revoke.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", type=int)
    target.add_argument("--device-id")
    revoke.set_defaults(handler=_revoke)
    listing = actions.add_parser("list", parents=[release], help="the tenant's issued and revoked certificates")
    listing.add_argument("tenant", metavar="TENANT", help="TenantIsolation name")
    listing.add_argument("-o", "--output", choices=["table", "json"], default="table")
    listing.set_defaults(handler=_list)


def _issue(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.services import devices

    try:
        issued = devices.issue(
            Kube(),
            args.tenant,
            args.device_id,
            args.device_class,
            args.manufacturer,
            args.model,
            args.out,
            args.namespace,
        )
    except (devices.DeviceError, ValueError, ApiError) as exc:
        fail("device issue", exc)
        return EXIT_USAGE if isinstance(exc, devices.WrongHomeError) else EXIT_INVALID
    print_json(issued)
    return EXIT_OK


def _revoke(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.services import devices

    try:
        serials = devices.revoke(Kube(), args.tenant, args.serial, args.device_id, args.namespace)
    except (devices.DeviceError, ValueError, ApiError) as exc:
        fail("device revoke", exc)
        return EXIT_USAGE if isinstance(exc, devices.WrongHomeError) else EXIT_INVALID
    print(f"revoked serials {', '.join(map(str, serials))}; the trust bundles' CRLs follow")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from iotsec.k8s.kube import ApiError, Kube
    from iotsec.services import devices

    try:
        rows = devices.list_devices(Kube(), args.tenant, args.namespace)
    except (devices.DeviceError, ValueError, ApiError) as exc:
        fail("device list", exc)
        return EXIT_INVALID
    if args.output == "json":
        print_json(rows)
    else:
        sys.stdout.write(table(rows))
    return EXIT_OK


def table(rows: list[dict[str, Any]]) -> str:
    """`iotsec device list` as columns; unknown values (older registries) as '-'."""
    header = ["DEVICE", "SERIAL", "NOT-AFTER", "ISSUER", "REVOKED"]
    lines = [
        [
            row["deviceID"] or "-",
            str(row["serial"]),
            row["notAfter"] or "-",
            (row["issuer"] or "-")[:16],
            row["revoked"] or "-",
        ]
        for row in rows
    ]
    widths = [max(len(cells[i]) for cells in [header, *lines]) for i in range(len(header))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip() + "\n" for cells in [header, *lines]
    )
