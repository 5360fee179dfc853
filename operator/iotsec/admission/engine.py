"""The verdict on one object: findings → violations, exceptions applied, the domain's mode decides."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iotsec.admission.configmaps import check_config_fed
from iotsec.admission.context import Context
from iotsec.admission.exceptions import exception_for
from iotsec.admission.model import Decision, ExceptionUse, Finding, Violation, container_names, warning_lines
from iotsec.admission.podspecs import UnreadablePatch, carried_pod_specs, patch_path, relocate
from iotsec.admission.resources import check_object
from iotsec.admission.workloads import check_pod
from iotsec.model.workloads import CHECKED_OBJECT_NAMES, WorkloadKindLike, checks_object, find_carrier, object_key

if TYPE_CHECKING:
    from iotsec.api.securitydomain import PolicyException


def findings(obj: dict[str, Any], ctx: Context) -> list[Finding]:
    namespace = (obj.get("metadata") or {}).get("namespace")
    found: list[Finding] = []
    key = object_key(obj)
    carrier = find_carrier(*key, workload_kinds(ctx))  # once: the pod specs and the object's own checks ask
    pods = carried_pod_specs(obj, carrier)
    for pod in pods:
        own: list[Finding] = []
        try:
            check_pod(pod, ctx, own)
            check_config_fed(pod, namespace, ctx, own)
        except (AttributeError, TypeError, KeyError, ValueError) as shape:
            patch = patch_path(pod)
            if patch is None:
                raise
            pod = UnreadablePatch(patch, f"the pod it makes is not shaped like a pod spec ({shape})")
        found.extend(relocate(pod, own))
    checked = checks_object(*key)
    # not a kind of the same name in another group (example.com/v1 Pod); a Knative Service by its pods alone
    if checked or (carrier is not None and key[1] not in CHECKED_OBJECT_NAMES):
        check_object(obj, ctx, found)
    if namespace and ctx.domain.name is None and (pods or (checked and obj.get("kind") in _NAMESPACED_CHECKED)):
        found.append(
            Finding(
                "domain-membership",
                "metadata.namespace",
                f"namespace {namespace} belongs to no SecurityDomain",
                "add the namespace to a SecurityDomain (spec.namespaces or namespaceSelector)",
            )
        )
    return found


def judges(obj: dict[str, Any], ctx: Context, kinds: tuple[WorkloadKindLike, ...] | None = None) -> bool:
    """Whether admission has anything to say about this (group, kind) in this context: a kind checked for itself,
    or one with pod specs (built in, or added by the domain or the chart's values). Others are not checked."""
    key = object_key(obj)
    return checks_object(*key) or find_carrier(*key, workload_kinds(ctx) if kinds is None else kinds) is not None


def workload_kinds(ctx: Context) -> tuple[WorkloadKindLike, ...]:
    """The kinds beyond the built-in table: the domain's (spec.workloadKinds), then the installation's (the chart's
    webhook.workloadKinds, carried by the snapshot's Platform)."""
    platform = getattr(ctx.snapshot, "platform", None)
    return (*ctx.domain.workload_kinds, *getattr(platform, "workload_kinds", ()))


_NAMESPACED_CHECKED = ("Service", "Ingress", "PersistentVolumeClaim")


class MalformedObjectError(ValueError):
    """The object is not shaped like its kind (the API server never sends one; a stray client may)."""


def decide(obj: dict[str, Any], ctx: Context) -> Decision:
    """The admission decision for one object in its context; MalformedObjectError for garbage."""
    if not isinstance(obj, dict) or not isinstance(obj.get("metadata", {}), dict):
        raise MalformedObjectError("the object and its metadata must be JSON objects")
    try:
        return _decide(obj, ctx)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        raise MalformedObjectError(f"{obj.get('kind', 'object')} is malformed: {type(exc).__name__}: {exc}") from None


def _decide(obj: dict[str, Any], ctx: Context) -> Decision:
    violations, used = [], []
    for finding in findings(obj, ctx):
        exception = exception_for(finding.rule, obj, ctx)
        if exception is None:
            violations.append(Violation.of(finding))
        else:
            used.append(_use(exception, finding.rule, ctx))
    violations = sorted(set(violations), key=lambda v: (v.path, v.rule))
    mode = ctx.domain.enforcement
    allowed = not violations or mode != "enforce"
    names = container_names(obj, violations)
    warnings = warning_lines(violations, names) if mode == "warn" else ()
    return Decision(allowed, mode, tuple(violations), tuple(dict.fromkeys(used)), warnings, names)


def _use(exception: PolicyException, rule: str, ctx: Context) -> ExceptionUse:
    return ExceptionUse(
        ctx.domain.name or "", rule, exception.approver, exception.expires.isoformat(), exception.ticket
    )
