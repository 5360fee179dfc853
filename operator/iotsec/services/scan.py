"""The background scan against a cluster: read what the scan judges through the API adapter, judge it
(`iotsec.admission.scan`), publish the findings as PolicyReports.

Only iotsec's own reports are ever written or deleted: `iotsec-scan` reports labelled
`app.kubernetes.io/managed-by: iotsec`. A report of that name that someone else made (no such label) is left as it
is, and the refusal is logged and counted: iotsec never overwrites or deletes what it did not create, and a user
cannot make iotsec's findings disappear by planting a report either (the findings stay in the metrics and in
`iotsec check --cluster`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from iotsec.admission.scan import SCANNED_KINDS, ScanResult, scan
from iotsec.admission.snapshot import CONTEXT_SOURCES
from iotsec.api.validation import parse_spec
from iotsec.build.policyreport import API_VERSION, NAME, policy_reports
from iotsec.k8s.kube import ApiError, Kube
from iotsec.model.labels import MANAGED_BY, MANAGER
from iotsec.model.manifests import clip
from iotsec.model.platform import Platform

log = logging.getLogger(__name__)
REPORT_KINDS = ("PolicyReport", "ClusterPolicyReport")


@dataclass
class Cluster:
    """What was read: the objects, and the kinds that could not be (kind -> why)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)


@dataclass
class Published:
    applied: list[str] = field(default_factory=list)  # "namespace/name" ("name" for the cluster report)
    deleted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # a report of iotsec's name that iotsec did not make
    failed: list[str] = field(default_factory=list)  # "<report>: <why>" of the writes that failed
    unavailable: str = ""  # why nothing was published (the PolicyReport CRD is not installed)


@dataclass
class Outcome:
    result: ScanResult
    reports: list[dict[str, Any]]
    unavailable: dict[str, str]
    seconds: float
    published: Published | None = None


def read_cluster(api: Kube) -> Cluster:
    """Every object the scan needs, cluster-wide: the context kinds and each scanned kind in the first API version
    the server serves. A kind the server does not serve is skipped; one iotsec may not list is noted (never a
    crash: the rest is still judged)."""
    cluster = Cluster()
    for api_version, kind in CONTEXT_SOURCES:
        _read(api, (api_version,), kind, cluster)
    for versions, kind in SCANNED_KINDS:
        _read(api, versions, kind, cluster)
    return cluster


def _read(api: Kube, versions: Sequence[str], kind: str, cluster: Cluster) -> None:
    for api_version in versions:
        try:
            cluster.objects.extend(api.list(api_version, kind))
            return
        except ApiError as exc:
            if exc.status == 404:
                continue  # not served in this version (or at all): the next version, else nothing to judge
            cluster.unavailable[f"{api_version}/{kind}"] = clip(exc, 300)
            return


def run_scan(
    api: Kube,
    platform: Platform,
    excluded_namespaces: Sequence[str] = (),
    now: datetime | None = None,
    unassigned: str = "enforce",
) -> Outcome:
    """Read, judge and build the reports (nothing written)."""
    started = time.perf_counter()
    cluster = read_cluster(api)
    moment = now or datetime.now(UTC)
    result = scan(cluster.objects, moment, platform, unassigned, excluded_namespaces, parse=parse_spec)
    reports = policy_reports(result, moment)
    return Outcome(result, reports, cluster.unavailable, time.perf_counter() - started)


def publish(api: Kube, reports: list[dict[str, Any]]) -> Published:
    """Server-side apply iotsec's reports (a report of that name someone else made is refused), delete iotsec's
    reports no scan result backs any more. A report someone creates between the list and the apply is taken over:
    the window is one request long, and the next scan's list sees whose it is."""
    published = Published()
    try:
        existing = _existing(api)
    except ApiError as exc:
        if exc.status != 404:
            raise
        published.unavailable = "the PolicyReport CRD (wgpolicyk8s.io/v1alpha2) is not installed"
        return published
    wanted = {_key(report) for report in reports}
    for report in reports:
        key = _key(report)
        live = existing.get(key)
        if live is not None and not _ours(live):
            published.refused.append(_title(key))
            continue
        try:
            api.apply(report)
        except ApiError as exc:  # one namespace (terminating, say) must not cost the others their reports
            published.failed.append(f"{_title(key)}: {clip(exc, 200)}")
            continue
        published.applied.append(_title(key))
    for key, live in sorted(existing.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if key in wanted or not _ours(live):
            continue
        try:
            if api.delete(API_VERSION, key[0], NAME, key[1]):
                published.deleted.append(_title(key))
        except ApiError as exc:
            published.failed.append(f"{_title(key)}: {clip(exc, 200)}")
    if published.failed:
        log.warning("background scan: could not publish %s", "; ".join(published.failed[:5]))
    if published.refused:
        log.warning(
            "background scan: left %s alone: a report named %s that iotsec did not make (no %s=%s label); "
            "its findings are in the metrics and in iotsec check --cluster",
            ", ".join(published.refused),
            NAME,
            MANAGED_BY,
            MANAGER,
        )
    return published


def _existing(api: Kube) -> dict[tuple[str, str | None], dict[str, Any]]:
    """(kind, namespace) -> the live report named iotsec-scan, whoever made it."""
    found = {}
    for kind in REPORT_KINDS:
        for item in api.list(API_VERSION, kind):
            meta = item.get("metadata") or {}
            if meta.get("name") == NAME:
                found[(kind, meta.get("namespace") or None)] = item
    return found


def _key(report: dict[str, Any]) -> tuple[str, str | None]:
    return (report["kind"], report["metadata"].get("namespace") or None)


def _ours(live: dict[str, Any]) -> bool:
    return ((live.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY) == MANAGER


def _title(key: tuple[str, str | None]) -> str:
    kind, namespace = key
    return f"{kind} {namespace}/{NAME}" if namespace else f"{kind} {NAME}"


def scan_and_publish(
    api: Kube, platform: Platform, excluded_namespaces: Sequence[str] = (), now: datetime | None = None
) -> Outcome:
    """One background scan: read, judge, publish. ApiError when the cluster cannot be read at all."""
    outcome = run_scan(api, platform, excluded_namespaces, now)
    outcome.published = publish(api, outcome.reports)
    return outcome
