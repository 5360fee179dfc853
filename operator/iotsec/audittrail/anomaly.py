"""Anomaly rules over Kubernetes audit events, in real time (X1369-9.6.4-7, X1369-9.1.1.1-5, X1369-9.6.3-1).

The detector consumes audit.k8s.io/v1 Event dicts as the API server sends them to the audit webhook and
counts, per rule and subject, the events that match the rule inside a sliding window. Time is always the
event's own timestamp, never the wall clock: a replay of the same events gives the same hits.

Pure: stdlib and iotsec.api only.
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from iotsec.api.auditpolicy import AnomalyRule
from iotsec.api.durations import parse_duration
from iotsec.model.time import parse_rfc3339, rfc3339

CONTROLS: dict[str, str] = {
    "AuthFailures": "X1369-9.1.1.1-5",
    "SecretAccess": "X1369-9.6.4-7",
    "PrivilegeGrant": "X1369-9.6.3-1",
    "ExecIntoPod": "X1369-9.6.3-1",
    "AdmissionDenials": "X1369-9.6.4-7",
    "RequestRate": "X1369-9.6.4-7",
    "AuditConfigChange": "X1369-9.6.4-7",
    "UnexpectedSource": "X1369-9.6.4-7",
}

# ResponseStarted precedes ResponseComplete for long requests (watch, exec): counting both would count twice.
COUNTED_STAGES = frozenset({"ResponseComplete", "Panic"})
READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
SHELL_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})
RBAC_GROUP = "rbac.authorization.k8s.io"
WEBHOOK_CONFIG_GROUP = "admissionregistration.k8s.io"

# SecretAccess exemption: control-plane components whose Secret reads are routine (controllers in
# kube-system, kube-scheduler/-proxy/-controller-manager, the API server itself, kubelets).
SYSTEM_COMPONENT_PREFIXES = ("system:serviceaccount:kube-system:", "system:kube-", "system:apiserver")
SYSTEM_COMPONENT_GROUPS = frozenset({"system:nodes"})

# PrivilegeGrant exemption, deliberately narrower: the API server (bootstrap policy) and
# kube-controller-manager, whose clusterrole-aggregation controller updates ClusterRoles, as itself or
# as one of its kube-system service accounts. Kubelets and other system:kube-* users granting RBAC is an anomaly.
RBAC_WRITER_USERS = frozenset({"system:apiserver", "system:kube-controller-manager"})
RBAC_WRITER_PREFIXES = ("system:serviceaccount:kube-system:",)

# Memory bound: per rule at most this many subjects are tracked; the least recently seen is evicted
# (losing its partial count), so a flood of distinct users or addresses cannot exhaust memory.
MAX_SUBJECTS = 10_000
MAX_AUDIT_IDS = 20
MAX_SUBJECT_IN_MESSAGE = 128

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AnomalyHit:
    """One anomaly rule firing for one subject."""

    rule: str
    type: str
    subject: str
    count: int
    first_seen: datetime
    last_seen: datetime  # newest event time in the window: the firing event's, unless it arrived out of order
    severity: str
    control: str
    message: str
    audit_ids: tuple[str, ...]


@dataclass(frozen=True)
class _Event:
    """The fields of an audit event the rules look at; the identity is the effective (impersonated) one."""

    time: datetime
    audit_id: str
    username: str
    groups: frozenset[str]
    verb: str
    resource: str
    subresource: str
    api_group: str
    code: int | None
    source_ips: tuple[str, ...]
    annotations: Mapping[str, Any]


@dataclass
class _RuleState:
    rule: AnomalyRule
    window: timedelta
    trusted: frozenset[str]
    allowed: frozenset[str]
    networks: tuple[Network, ...]
    windows: OrderedDict[str, list[tuple[datetime, str]]]


class AnomalyDetector:
    """Sliding-window counters per (rule, subject); a rule fires when its count reaches the threshold."""

    def __init__(self, rules: Sequence[AnomalyRule], trusted_admin_groups: Sequence[str]) -> None:
        trusted = frozenset(trusted_admin_groups)
        self._states = [_state(rule, trusted) for rule in rules]
        self._clock: datetime | None = None

    def observe(self, event: Mapping[str, Any]) -> list[AnomalyHit]:
        """The hits this event triggers (usually none)."""
        stage = event.get("stage")
        if stage is not None and (not isinstance(stage, str) or stage not in COUNTED_STAGES):
            return []
        parsed = self._parse(event)
        if parsed is None:
            return []
        hits = (_count(state, parsed) for state in self._states if _MATCHERS[state.rule.type](parsed, state))
        return [hit for hit in hits if hit is not None]

    def observe_all(self, events: Iterable[Mapping[str, Any]]) -> list[AnomalyHit]:
        return [hit for event in events for hit in self.observe(event)]

    def _parse(self, event: Mapping[str, Any]) -> _Event | None:
        # An event without a usable timestamp is placed at the newest time seen so far; the very first one is skipped.
        time = _timestamp(event) or self._clock
        if time is None:
            return None
        self._clock = max(time, self._clock or time)
        return _event(event, time)


def _state(rule: AnomalyRule, trusted: frozenset[str]) -> _RuleState:
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in rule.allowed_cidrs or ())
    allowed = trusted | frozenset(rule.allowed_groups or ())
    return _RuleState(rule, parse_duration(rule.window), trusted, allowed, networks, OrderedDict())


def _timestamp(event: Mapping[str, Any]) -> datetime | None:
    for key in ("stageTimestamp", "requestReceivedTimestamp"):
        text = event.get(key)
        if not isinstance(text, str):
            continue
        try:
            return parse_rfc3339(text, key, naive_is_utc=True)
        except ValueError:
            continue
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    """The value when it is an object; anything else (a malformed field) reads as empty, never as a crash."""
    return value if isinstance(value, Mapping) else {}


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(str(item) for item in value if isinstance(item, str | int | float)) if isinstance(value, list) else ()


def _event(event: Mapping[str, Any], time: datetime) -> _Event:
    user = _mapping(event.get("impersonatedUser")) or _mapping(event.get("user"))
    ref = _mapping(event.get("objectRef"))
    code = _mapping(event.get("responseStatus")).get("code")
    return _Event(
        time=time,
        audit_id=str(event.get("auditID") or ""),
        username=str(user.get("username") or "-"),
        groups=frozenset(_texts(user.get("groups"))),
        verb=str(event.get("verb") or ""),
        resource=str(ref.get("resource") or ""),
        subresource=str(ref.get("subresource") or ""),
        api_group=str(ref.get("apiGroup") or ""),
        code=code if isinstance(code, int) else None,
        source_ips=_texts(event.get("sourceIPs")),
        annotations=_mapping(event.get("annotations")),
    )


def _count(state: _RuleState, event: _Event) -> AnomalyHit | None:
    subject = _subject(state.rule.group_by, event)
    window = state.windows.setdefault(subject, [])
    state.windows.move_to_end(subject)
    if len(state.windows) > MAX_SUBJECTS:
        state.windows.popitem(last=False)
    # Kept sorted by time, so an event arriving out of order is counted at its own time.
    bisect.insort(window, (event.time, event.audit_id))
    horizon = window[-1][0] - state.window
    del window[: bisect.bisect_left(window, (horizon,))]
    if len(window) < state.rule.threshold:
        return None
    del state.windows[subject]  # re-arm: the next hit needs `threshold` new events
    return _hit(state.rule, subject, window)


def _subject(group_by: str, event: _Event) -> str:
    if group_by == "user":
        return event.username
    if group_by == "sourceIP":
        return event.source_ips[0] if event.source_ips else "-"
    return "*"


def _hit(rule: AnomalyRule, subject: str, window: list[tuple[datetime, str]]) -> AnomalyHit:
    first, last, control = window[0][0], window[-1][0], CONTROLS[rule.type]
    return AnomalyHit(
        rule=rule.name,
        type=rule.type,
        subject=subject,
        count=len(window),
        first_seen=first,
        last_seen=last,
        severity=rule.severity,
        control=control,
        message=_message(rule, subject, len(window), first, last, control),
        audit_ids=tuple(audit_id for _, audit_id in window if audit_id)[-MAX_AUDIT_IDS:],
    )


_WHAT = {
    "AuthFailures": "authentication/authorization failures",
    "SecretAccess": "Secret reads outside the allowed groups",
    "PrivilegeGrant": "RBAC changes outside the trusted admin groups",
    "ExecIntoPod": "exec/attach/port-forward into pods outside the trusted admin groups",
    "AdmissionDenials": "requests denied by admission policy",
    "RequestRate": "requests",
    "AuditConfigChange": "changes to AuditPolicies or admission webhook configurations",
    "UnexpectedSource": "requests from outside the allowed CIDRs",
}
_WHO = {"user": "by user {}", "sourceIP": "from source IP {}", "none": "across all subjects"}


def _message(rule: AnomalyRule, subject: str, count: int, first: datetime, last: datetime, control: str) -> str:
    who = _WHO[rule.group_by].format(_printable(subject))
    return (
        f"anomaly {rule.name} ({rule.type}, {rule.severity}): {count} {_WHAT[rule.type]} {who} "
        f"within {rule.window} ({rfc3339(first)} to {rfc3339(last)}); control {control}"
    )


def _printable(text: str) -> str:
    # Usernames and addresses come from requests: keep the message on one line and bounded.
    return "".join(c if c.isprintable() else "?" for c in text[:MAX_SUBJECT_IN_MESSAGE])


# Matchers: does an event count towards a rule of this type?


def _is_system_component(event: _Event) -> bool:
    return event.username.startswith(SYSTEM_COMPONENT_PREFIXES) or bool(event.groups & SYSTEM_COMPONENT_GROUPS)


def _is_rbac_writer(event: _Event) -> bool:
    return event.username in RBAC_WRITER_USERS or event.username.startswith(RBAC_WRITER_PREFIXES)


def _auth_failure(event: _Event, state: _RuleState) -> bool:
    # A 403 is an authorization failure only when the authorizer said so; admission webhooks also answer 403.
    forbidden = event.code == 403 and event.annotations.get("authorization.k8s.io/decision") == "forbid"
    return event.code == 401 or forbidden


def _secret_access(event: _Event, state: _RuleState) -> bool:
    is_secret_read = event.resource == "secrets" and not event.api_group and event.verb in READ_VERBS
    return is_secret_read and not event.groups & state.allowed and not _is_system_component(event)


def _privilege_grant(event: _Event, state: _RuleState) -> bool:
    # An unknown outcome counts: alerting on an uncertain grant is cheaper than missing one.
    happened = event.code is None or event.code < 400
    is_rbac_write = event.api_group == RBAC_GROUP and event.verb in WRITE_VERBS and happened
    return is_rbac_write and not event.groups & state.trusted and not _is_rbac_writer(event)


def _exec_into_pod(event: _Event, state: _RuleState) -> bool:
    is_shell = event.resource == "pods" and not event.api_group and event.subresource in SHELL_SUBRESOURCES
    return is_shell and not event.groups & state.trusted


def _unexpected_source(event: _Event, state: _RuleState) -> bool:
    return any(_outside(ip, state.networks) for ip in event.source_ips)


def _outside(text: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return True  # an address that does not parse is not inside any allowed range
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return not any(address.version == net.version and address in net for net in networks)


def _admission_denial(event: _Event, state: _RuleState) -> bool:
    # The API server prefixes a webhook's auditAnnotations with its name: "pods.validate.iotsec.io/violations".
    has_violations = any(str(key).endswith("/violations") for key in event.annotations)
    return has_violations and event.code is not None and event.code >= 400


def _any_request(event: _Event, state: _RuleState) -> bool:
    return True


def _audit_config_change(event: _Event, state: _RuleState) -> bool:
    is_audit_policy = event.api_group == "iotsec.io" and event.resource == "auditpolicies"
    return event.verb in WRITE_VERBS and (is_audit_policy or event.api_group == WEBHOOK_CONFIG_GROUP)


_MATCHERS: dict[str, Callable[[_Event, _RuleState], bool]] = {
    "AuthFailures": _auth_failure,
    "SecretAccess": _secret_access,
    "PrivilegeGrant": _privilege_grant,
    "ExecIntoPod": _exec_into_pod,
    "UnexpectedSource": _unexpected_source,
    "AdmissionDenials": _admission_denial,
    "RequestRate": _any_request,
    "AuditConfigChange": _audit_config_change,
}
