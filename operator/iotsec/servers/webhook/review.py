"""AdmissionReview v1 handling, pure: bytes in, (HTTP status, JSON body) out. Never raises."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from iotsec.admission.context import Context, Snapshot
from iotsec.admission.engine import MalformedObjectError, decide
from iotsec.admission.guard import ANSWERED_KINDS, confine_operator, protect_managed
from iotsec.admission.model import Decision, Violation, container_names, warning_lines
from iotsec.model.workloads import BUILT_IN, CHECKED_OBJECT_KINDS, carriers_of

API_VERSION = "admission.k8s.io/v1"
MAX_BODY_BYTES = 6 * 1024 * 1024  # the API server sends at most ~3 MiB objects, old and new
# (API group, kind): a kind of the same name in another group (example.com/v1 Pod) is not checked
# pods/ephemeralcontainers of Kubernetes 1.16-1.21 (`kubectl debug`): an object of its own, judged as a pod's
EPHEMERAL_CONTAINERS = ("", "EphemeralContainers")
CHECKED_KINDS = frozenset(c.key for c in BUILT_IN) | CHECKED_OBJECT_KINDS | {EPHEMERAL_CONTAINERS}
CHECKED_OPERATIONS = ("CREATE", "UPDATE")
MAX_WARNING = 256  # a last guard: the engine's grouped warnings fit already (admission.model.MAX_LINE, WARNINGS_BUDGET)


class ReviewError(ValueError):
    """A request that is not a usable AdmissionReview: answered with HTTP 400 and this reason."""


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__
class AdmissionRequest:
    uid: str
    kind: str
    operation: str
    namespace: str | None
    obj: Any
    dry_run: bool
    user: str
    old: Any = None
    groups: frozenset[str] = frozenset()
    group: str = ""  # request.kind.group: "" is the core group
    version: str = ""  # request.kind.version

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


@dataclass(slots=True)
class ReviewResult:
    """What one review came to, for the HTTP layer and for metrics."""

    status: int
    body: dict[str, Any]
    kind: str = "unknown"
    operation: str = "unknown"
    verdict: str = "error"  # allowed, denied, warned, skipped, error
    decision: Decision | None = None
    dry_run: bool = False
    unknown_namespace: str | None = None  # judged in a namespace the snapshot does not hold (yet)


def parse_review(body: bytes) -> AdmissionRequest:
    if len(body) > MAX_BODY_BYTES:
        raise ReviewError(f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
    try:
        review = orjson.loads(body)  # twice as fast as json.loads; parsing is most of an admission's cost
    except orjson.JSONDecodeError as exc:
        raise ReviewError(f"body is not JSON: {exc}") from None
    if not isinstance(review, dict):
        raise ReviewError("body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind AdmissionReview, got "
            f"{review.get('apiVersion')!r} {review.get('kind')!r}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise ReviewError("AdmissionReview has no request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise ReviewError("request.uid is missing")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise ReviewError("request.kind is missing")
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise ReviewError(f"request.operation {operation!r} is not CREATE, UPDATE, DELETE or CONNECT")
    obj = request.get("object")
    if operation in CHECKED_OPERATIONS and not isinstance(obj, dict):
        raise ReviewError(f"request.object must be an object for {operation}")
    namespace = request.get("namespace")
    user_info = request.get("userInfo")
    user = user_info.get("username", "") if isinstance(user_info, dict) else ""
    return AdmissionRequest(
        uid,
        kind["kind"],
        operation,
        namespace if isinstance(namespace, str) else None,
        obj,
        bool(request.get("dryRun")),
        str(user),
        request.get("oldObject"),
        _groups(user_info),
        group=str(kind.get("group") or ""),
        version=str(kind.get("version") or ""),
    )


def _groups(user_info: Any) -> frozenset[str]:
    groups = user_info.get("groups") if isinstance(user_info, dict) else None
    return frozenset(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else frozenset()


def review(body: bytes, snapshot: Snapshot | None, now: Callable[[], datetime]) -> ReviewResult:
    """Answer one AdmissionReview. HTTP 400 for unusable input; otherwise 200 with the response."""
    try:
        request = parse_review(body)
    except ReviewError as exc:
        return ReviewResult(400, {"error": str(exc)})
    base: dict[str, Any] = {"kind": request.kind, "operation": request.operation, "dry_run": request.dry_run}
    if snapshot is not None and request.namespace and request.namespace not in snapshot.namespaces:
        base["unknown_namespace"] = request.namespace
    if request.kind in ANSWERED_KINDS and snapshot is not None:
        confined = _confinement(request, snapshot)  # always enforced, whatever the domain's mode
        if confined is not None:
            audit = None if request.dry_run else _audit_annotations(confined)
            body_out = _response(request.uid, False, message=confined.message, audit=audit)
            return ReviewResult(200, body_out, verdict="denied", decision=confined, **base)
    if request.operation not in CHECKED_OPERATIONS or not _checked(request, snapshot):
        return ReviewResult(200, _response(request.uid, True), verdict="skipped", **base)
    if snapshot is None:
        message = "iotsec: the webhook has not loaded the cluster's SecurityDomains yet; retry in a few seconds"
        return ReviewResult(200, _response(request.uid, False, message=message, code=503), verdict="denied", **base)
    # The API server sends the object converted to request.kind's version (matchPolicy Equivalent): its group and
    # kind are request.kind's, whatever the object claims
    obj = {**request.obj, "apiVersion": request.api_version, "kind": request.kind}
    if request.namespace and isinstance(obj.get("metadata"), dict) and not obj["metadata"].get("namespace"):
        obj = {**obj, "metadata": {**obj["metadata"], "namespace": request.namespace}}
    judge = _decide_ephemeral if (request.group, request.kind) == EPHEMERAL_CONTAINERS else decide
    try:
        decision = judge(obj, snapshot.context(request.namespace, now(), request.user))
    except MalformedObjectError as exc:
        return ReviewResult(400, {"error": str(exc)}, **base)
    verdict = "denied" if not decision.allowed else "warned" if decision.violations else "allowed"
    body_out = _response(
        request.uid,
        decision.allowed,
        message=decision.message if decision.violations else None,  # "" then: skip the cached property's lock
        warnings=[w[:MAX_WARNING] for w in decision.warnings],
        audit=None if request.dry_run else _audit_annotations(decision),  # a dry run leaves no records
    )
    return ReviewResult(200, body_out, verdict=verdict, decision=decision, **base)


def _decide_ephemeral(obj: dict[str, Any], ctx: Context) -> Decision:
    """An EphemeralContainers object judged as the pod it adds containers to: only the findings on its
    ephemeralContainers count (the rest of the pod was judged when it was created)."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": obj.get("metadata") or {},
        "spec": {"containers": [], "ephemeralContainers": obj.get("ephemeralContainers") or []},
    }
    decision = decide(pod, ctx)
    prefix = "spec.ephemeralContainers"
    violations = tuple(
        dataclasses.replace(v, path=v.path.removeprefix("spec."))
        for v in decision.violations
        if v.path == prefix or v.path.startswith((prefix + ".", prefix + "["))
    )
    names = container_names(obj, violations)
    warnings = warning_lines(violations, names) if decision.mode == "warn" else ()
    allowed = not violations or decision.mode != "enforce"
    return Decision(allowed, decision.mode, violations, decision.exceptions_used, warnings, names)


def _checked(request: AdmissionRequest, snapshot: Snapshot | None) -> bool:
    """Whether the webhook judges this (group, kind): built in, added by the chart's values, or by the domain of
    the request's namespace (the last two are known once the snapshot is)."""
    key = (request.group, request.kind)
    if key in CHECKED_KINDS:
        return True
    if snapshot is None:
        return False
    added = (*snapshot.platform.workload_kinds, *carriers_of(snapshot.domain_of(request.namespace).workload_kinds))
    return any(c.key == key for c in added)


def _confinement(request: AdmissionRequest, snapshot: Snapshot) -> Decision | None:
    found = confine_operator(
        request.user,
        request.kind,
        request.operation,
        request.namespace,
        request.obj,
        request.old,
        snapshot.platform,
        snapshot.managed,
    ) + protect_managed(
        request.user,
        request.groups,
        request.kind,
        request.operation,
        request.obj,
        request.old,
        snapshot.platform,
        snapshot.trusted_groups,
    )
    if not found:
        return None
    return Decision(False, "enforce", tuple(Violation.of(f) for f in found))


def _response(
    uid: str,
    allowed: bool,
    message: str | None = None,
    code: int = 403,
    warnings: list[str] | None = None,
    audit: dict[str, str] | None = None,
) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        response["status"] = {
            "code": code,
            "reason": "Forbidden" if code == 403 else "ServiceUnavailable",
            "message": message or "",
        }
    if warnings:
        response["warnings"] = warnings
    if audit:
        response["auditAnnotations"] = audit
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


def _audit_annotations(decision: Decision) -> dict[str, str]:
    """Recorded in the API server's audit log with the request (X1369-9.1.4-5, exception use)."""
    annotations = {}
    if decision.violations:
        annotations["violations"] = json.dumps([f"{v.control} {v.rule} {v.path}" for v in decision.violations])
        annotations["mode"] = decision.mode
    if decision.exceptions_used:
        annotations["exceptions"] = json.dumps([u.line() for u in decision.exceptions_used])
    return annotations
