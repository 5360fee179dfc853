"""The background scan's findings as PolicyReports (wgpolicyk8s.io/v1alpha2, the Kubernetes Policy WG format that
Kyverno, Trivy and Falco write and Policy Reporter shows), pure.

One PolicyReport `iotsec-scan` per namespace with checked objects, one ClusterPolicyReport `iotsec-scan` for the
cluster-scoped ones, each labelled `app.kubernetes.io/managed-by: iotsec`. One result per (rule, object):

- `fail`: a violation in an enforce-mode domain (the webhook would deny the object now);
- `warn`: a violation in a warn- or audit-mode domain;
- `skip`: a finding an exception waives (properties name the exception, its justification and approver);
- `pass`: one per checked object with no finding at all (rule `all`);
- `error`: an object of a checked kind the engine could not judge (malformed: a custom resource whose schema lets any
  shape through), rule `malformed`: never left out, or a privileged object with one odd field would vanish.

`category` and `properties.control` carry the X.1369 control id, `severity` the rule's. A report stays well under
etcd's 1.5 MB object limit: beyond `MAX_REPORT_BYTES` of results (failures kept first) the rest are left out and a
last `error` result says how many; the summary still counts every result, the left-out ones too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from iotsec.model.labels import MANAGED_BY, MANAGER

API_VERSION = "wgpolicyk8s.io/v1alpha2"
NAME = "iotsec-scan"
POLICY = "iotsec"
SOURCE = "iotsec"
PASS_RULE = "all"
CUT_RULE = "results-left-out"
ERROR_RULE = "malformed"
MAX_REPORT_BYTES = 1_000_000  # etcd refuses objects over 1.5 MiB; room for metadata and managedFields
SUMMARY_KEYS = ("pass", "fail", "warn", "error", "skip")
_RESULT_ORDER = {"fail": 0, "warn": 1, "error": 2, "skip": 3, "pass": 4}
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4}
SEVERITIES = frozenset(_SEVERITY_ORDER)


class Ref(Protocol):
    @property
    def api_version(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def uid(self) -> str | None: ...


class Finding(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def control(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def message(self) -> str: ...


class WaiverLike(Protocol):
    @property
    def rule(self) -> str: ...
    @property
    def control(self) -> str: ...
    @property
    def severity(self) -> str: ...
    @property
    def exception(self) -> str: ...
    @property
    def justification(self) -> str: ...
    @property
    def approver(self) -> str: ...
    @property
    def expires(self) -> str: ...
    @property
    def ticket(self) -> str | None: ...


class Scanned(Protocol):
    @property
    def ref(self) -> Ref: ...
    @property
    def namespace(self) -> str | None: ...
    @property
    def domain(self) -> str | None: ...
    @property
    def mode(self) -> str: ...

    @property
    def violations(self) -> Sequence[Finding]: ...
    @property
    def waivers(self) -> Sequence[WaiverLike]: ...


class Result(Protocol):
    @property
    def objects(self) -> Sequence[Scanned]: ...
    @property
    def invalid(self) -> Sequence[tuple[Ref, str]]: ...


def policy_reports(result: Result, now: datetime) -> list[dict[str, Any]]:
    """The PolicyReports (by namespace, sorted) and the ClusterPolicyReport of a scan, as `kubectl apply` takes
    them."""
    stamp = {"seconds": int(now.timestamp()), "nanos": 0}
    by_namespace: dict[str | None, list[dict[str, Any]]] = {}
    for scanned in result.objects:
        by_namespace.setdefault(scanned.namespace, []).extend(_results(scanned, stamp))
    for ref, problem in result.invalid:
        message = f"{ref.kind} {ref.name} could not be judged (malformed): {problem}"
        error = _result(ERROR_RULE, "", "high", "error", message[:1024], _resource(ref), stamp, {})
        by_namespace.setdefault(ref.namespace, []).append(error)
    reports = [_report(ns, results, stamp) for ns, results in sorted(by_namespace.items(), key=lambda kv: kv[0] or "")]
    return sorted(reports, key=lambda r: (r["kind"] != "PolicyReport", r["metadata"].get("namespace", "")))


def _results(scanned: Scanned, stamp: dict[str, int]) -> list[dict[str, Any]]:
    resource = _resource(scanned.ref)
    base = {"domain": scanned.domain or "", "mode": scanned.mode}  # a cluster-scoped object has no domain
    out = []
    for finding in scanned.violations:
        verdict = "fail" if scanned.mode == "enforce" else "warn"
        out.append(
            _result(finding.rule, finding.control, finding.severity, verdict, finding.message, resource, stamp, base)
        )
    for waiver in scanned.waivers:
        extra = {
            **base,
            "exception": waiver.exception,
            "justification": waiver.justification,
            "approver": waiver.approver,
            "expires": waiver.expires,
            **({"ticket": waiver.ticket} if waiver.ticket else {}),
        }
        message = f"waived by exception {waiver.exception}, approved by {waiver.approver} until {waiver.expires}"
        out.append(_result(waiver.rule, waiver.control, waiver.severity, "skip", message, resource, stamp, extra))
    if not out:
        message = f"{scanned.ref.kind} {scanned.ref.name} passes every iotsec rule"
        out.append(_result(PASS_RULE, "", None, "pass", message, resource, stamp, base))
    return out


def _result(
    rule: str,
    control: str,
    severity: str | None,
    verdict: str,
    message: str,
    resource: dict[str, str],
    stamp: dict[str, int],
    properties: dict[str, str],
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "policy": POLICY,
        "rule": rule,
        "result": verdict,
        "source": SOURCE,
        "message": message,
        "timestamp": dict(stamp),
        "resources": [resource],
        # no empty values: the API server's JSON handling turns "" into null, which the schema refuses
        "properties": {key: value for key, value in {"control": control, **properties}.items() if value},
        "scored": True,
    }
    if control:
        result["category"] = control
    if severity is not None:
        result["severity"] = severity if severity in SEVERITIES else "info"
    return result


def _resource(ref: Ref) -> dict[str, str]:
    out = {"apiVersion": ref.api_version, "kind": ref.kind, "name": ref.name}
    if ref.namespace:
        out["namespace"] = ref.namespace
    if ref.uid:
        out["uid"] = ref.uid
    return out


def _sort_key(result: dict[str, Any]) -> tuple[Any, ...]:
    resource = result["resources"][0]
    return (
        _RESULT_ORDER[result["result"]],
        _SEVERITY_ORDER.get(result.get("severity", "info"), 9),
        resource["kind"],
        resource["name"],
        resource["apiVersion"],
        result["rule"],
    )


def _report(namespace: str | None, results: list[dict[str, Any]], stamp: dict[str, int]) -> dict[str, Any]:
    ordered = sorted(results, key=_sort_key)
    summary = dict.fromkeys(SUMMARY_KEYS, 0)
    for result in ordered:
        summary[result["result"]] += 1
    kept = _within(ordered, MAX_REPORT_BYTES)
    if len(kept) < len(ordered):
        kept.append(_cut(ordered[len(kept) :], stamp))
        summary["error"] += 1
    metadata: dict[str, Any] = {"name": NAME, "labels": {MANAGED_BY: MANAGER}}
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": "PolicyReport" if namespace else "ClusterPolicyReport",
        "metadata": metadata,
        "summary": summary,
        "results": kept,
    }


def _within(results: Iterable[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    kept, used = [], 2048  # the envelope and the closing result
    for result in results:
        used += len(json.dumps(result, ensure_ascii=False).encode()) + 1
        if used > budget:
            break
        kept.append(result)
    return kept


def _cut(left: list[dict[str, Any]], stamp: dict[str, int]) -> dict[str, Any]:
    counts = {key: sum(1 for r in left if r["result"] == key) for key in SUMMARY_KEYS}
    said = ", ".join(f"{n} {key}" for key, n in counts.items() if n)
    return {
        "policy": POLICY,
        "rule": CUT_RULE,
        "result": "error",
        "source": SOURCE,
        "message": f"{len(left)} more results left out ({said}) to keep this report under etcd's object size limit; "
        "the summary counts them; run iotsec check --cluster for all",
        "timestamp": dict(stamp),
        "properties": {"leftOut": str(len(left)), **{k: str(v) for k, v in counts.items() if v}},
    }
