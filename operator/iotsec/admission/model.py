"""Findings, violations and the decision an admission request gets."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Protocol

from iotsec.admission.rules import RULES

# What the API server passes on (k8s.io/apiserver filters/warning.go): warnings are counted in runes; once they
# add up to more than 4,096 from all sources (PodSecurity, deprecations, other webhooks), each is cut at 256 and
# the rest dropped; a warning with a control character is dropped outright.
MAX_LINE = 255
WARNINGS_BUDGET = 3072  # leaves 1,024 of the 4,096 for the other sources of warnings on the same request
MESSAGE_BUDGET = 4000  # the denial message, with room for the API server's 'admission webhook "…" denied' prefix
MEMBERSHIP_RULE = "domain-membership"
MAX_FIXES_PER_RULE = 3  # more distinct fixes (hostNetwork, hostPID, hostIPC is three): one line with the rule's title
_SEVERITY_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
_CONTAINER = re.compile(
    r"^(?P<at>(?P<before>(?:.*\.)?)(?P<list>initContainers|containers|ephemeralContainers)\[(?P<index>\d+)\])(?P<after>.*)$"
)
_KIND_WORDS = {
    "initContainers": "init container",
    "containers": "container",
    "ephemeralContainers": "ephemeral container",
}
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_INDEX = re.compile(r"\[\d+\]")


@dataclass(frozen=True)
class Finding:
    """A rule broken at a JSON path, with what is wrong and the one-line fix."""

    rule: str
    path: str
    message: str
    fix: str


@dataclass(frozen=True, order=True)
class Violation:
    control: str
    rule: str
    severity: str
    path: str
    message: str
    fix: str

    @classmethod
    def of(cls, finding: Finding) -> Violation:
        rule = RULES[finding.rule]
        return cls(rule.control, rule.id, rule.severity, finding.path, finding.message, finding.fix)

    def line(self) -> str:
        """`[X1369-9.4.3-1 no-privileged] spec.containers[0]...privileged: ... — set privileged: false`"""
        return f"[{self.control} {self.rule}] {self.path}: {self.message} — {self.fix}"

    def as_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "control": self.control,
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class ExceptionUse:
    domain: str
    rule: str
    approver: str
    expires: str
    ticket: str | None

    def line(self) -> str:
        ticket = f", ticket {self.ticket}" if self.ticket else ""
        return (
            f"exception of domain {self.domain} waives {self.rule} (approved by {self.approver}{ticket}, "
            f"until {self.expires})"
        )


@dataclass(frozen=True)
class Decision:
    """What admission does: allowed or not, the message, warnings, and what it records."""

    allowed: bool
    mode: str
    violations: tuple[Violation, ...] = ()
    exceptions_used: tuple[ExceptionUse, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    # the names of the containers the violations point into (container_names), for the message
    names: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @cached_property
    def message(self) -> str:
        """`iotsec: N X.1369 violations`, then one line per rule and fix (see grouped_lines), within MESSAGE_BUDGET."""
        if not self.violations:
            return ""
        head = f"iotsec: {len(self.violations)} X.1369 violation{'s' if len(self.violations) > 1 else ''}"
        lines = _within(_groups(self.violations, self.names), MESSAGE_BUDGET - len(head) - 1, separator=1)
        return "\n".join([head, *lines])


def warning_lines(violations: Sequence[Violation], names: Mapping[str, str]) -> tuple[str, ...]:
    """The warn-mode warnings: the message's grouped lines, each one warning, all within WARNINGS_BUDGET."""
    return tuple(_within(_groups(violations, names), WARNINGS_BUDGET, separator=0)) if violations else ()


# ---------------------------------------------------------------- grouping, as Pod Security Admission does


@dataclass(frozen=True)
class GroupedLine:
    text: str
    violations: int
    rule: str


@dataclass(frozen=True)
class _Item:
    contained: bool  # in a container
    kind: str | None  # "container", "init container", …; None where the name is unknown or not in a container
    label: str  # the container's name (or containers[3]); the path where not in a container
    detail: str  # the violation's message, the container's name taken off its front
    before: str  # the path to the container list (every index as [*]); the whole path where not in a container
    list: str  # containers, initContainers or ephemeralContainers; "" where not in a container
    after: str  # the path inside the container, every index as [*]


def grouped_lines(violations: Sequence[Violation], names: Mapping[str, str]) -> list[GroupedLine]:
    """One line per rule and fix, the fix first, the containers it concerns listed, each line within MAX_LINE.

    `[X1369-9.4.3-1 no-privilege-escalation] set allowPrivilegeEscalation: false — containers a, b: may gain
    privileges (spec.template.spec.containers[*].securityContext.allowPrivilegeEscalation)`. Most severe first.
    """
    return [GroupedLine(g.text, len(g.members), g.rule) for g in _groups(violations, names)]


@dataclass
class _Group:
    """The violations of one rule with one fix; its line is written only when it is said (a budget may cut it)."""

    control: str
    rule: str
    fix: str | None  # None: a fix per violation (each names its own image, say), said as the rule's title
    members: list[Violation]
    names: Mapping[str, str]

    @cached_property
    def text(self) -> str:
        if self.fix is None:
            items = [_item(replace(v, message=v.fix), self.names, strip_name=False) for v in self.members]
            return _group_line(self.control, self.rule, RULES[self.rule].title, items)
        return _group_line(self.control, self.rule, self.fix, [_item(v, self.names) for v in self.members])


def _groups(violations: Sequence[Violation], names: Mapping[str, str]) -> list[_Group]:
    by_fix: dict[tuple[str, str, str], list[Violation]] = {}
    for violation in violations:
        by_fix.setdefault((violation.control, violation.rule, violation.fix), []).append(violation)
    fixes: dict[str, int] = {}
    for _control, rule, _fix in by_fix:
        fixes[rule] = fixes.get(rule, 0) + 1
    groups: dict[tuple[str, str, str | None], list[Violation]] = {}
    for (control, rule, fix), members in by_fix.items():  # a fix per image must not crowd the other rules out
        groups.setdefault((control, rule, fix if fixes[rule] <= MAX_FIXES_PER_RULE else None), []).extend(members)
    ordered = sorted(groups.items(), key=lambda kv: _SEVERITY_ORDER.get(kv[1][0].severity, 9))
    return [_Group(control, rule, fix, members, names) for (control, rule, fix), members in ordered]


def _item(violation: Violation, names: Mapping[str, str], strip_name: bool = True) -> _Item:
    match = _CONTAINER.match(violation.path)
    if match is None:
        return _Item(False, None, violation.path, violation.message, _INDEX.sub("[*]", violation.path), "", "")
    name = names.get(match["at"])
    detail = violation.message
    if strip_name and name and detail.startswith(f"{name} "):
        detail = detail[len(name) + 1 :]
    label = name or f"{match['list']}[{match['index']}]"
    kind = _KIND_WORDS[match["list"]] if name else None
    before, after = _INDEX.sub("[*]", match["before"]), _INDEX.sub("[*]", match["after"])
    return _Item(True, kind, label, detail, before, match["list"], after)


def _group_line(control: str, rule: str, fix: str, items: list[_Item]) -> str:
    head = f"[{control} {rule}] {fix} — "
    room = MAX_LINE - len(head)
    candidates = _candidates(items)
    for cut in (False, True):
        for prefix, parts, joiner, suffix in candidates:
            body = _join(prefix, parts, joiner, suffix, room, cut)
            if body is not None:
                return _clean(head + body)
    prefix, parts, joiner, suffix = candidates[-1]  # a fix too long for a line: clipped, never dropped
    return _clean(_clip(head + prefix + joiner.join(parts[:1]) + suffix, MAX_LINE))


def _candidates(items: list[_Item]) -> list[tuple[str, list[str], str, str]]:
    """What to say about the group, most complete first: (prefix, list, joiner, suffix); the list may be cut."""
    subjects = _subjects(items)
    details = _distinct(i.detail for i in items)
    if not any(i.contained for i in items) and len(details) == 1:  # pod or object level: the paths are the subjects
        patterns = _patterns(items)
        return [(f"{details[0]} (", patterns, ", ", ")"), ("", [details[0]], "", ""), ("", patterns, ", ", "")]
    wheres = [f" ({', '.join(p)})" for p in _distinct(_pattern_forms(items))] + [""]
    if len(details) == 1:
        return [("", subjects, ", ", f": {details[0]}{wheres[0]}"), *(("", subjects, ", ", w) for w in wheres)]
    entries = _distinct(f"{i.label}: {i.detail}" if i.contained else i.detail for i in items)
    return [("", entries, "; ", wheres[0]), ("", entries, "; ", ""), *(("", subjects, ", ", w) for w in wheres)]


def _pattern_forms(items: list[_Item]) -> list[tuple[str, ...]]:
    """The paths, from the object's root; from the container lists; from inside the containers."""
    inside = tuple(_distinct(i.after.lstrip(".") if i.contained else i.before for i in items))
    return [tuple(_patterns(items)), tuple(_patterns(items, within_pod=True)), inside]


def _patterns(items: list[_Item], within_pod: bool = False) -> list[str]:
    """The paths, indices as [*]; container lists sharing the rest merged: `spec.{containers,initContainers}[*].x`."""
    lists: dict[tuple[str, str], list[str]] = {}
    for item in items:
        merged = lists.setdefault((item.before, item.after), [])
        if item.list and item.list not in merged:
            merged.append(item.list)
    return [
        before if not names else f"{'' if within_pod else before}{_alternatives(names)}[*]{after}"
        for (before, after), names in lists.items()
    ]


def _alternatives(names: list[str]) -> str:
    return names[0] if len(names) == 1 else "{" + ",".join(names) + "}"


def _subjects(items: list[_Item]) -> list[str]:
    """`containers a`, `b`, `init container c`: the kind named before the first of its kind, plural if several."""
    labels = _distinct((i.kind, i.label) for i in items)
    counts: dict[str | None, int] = {}
    for kind, _label in labels:
        counts[kind] = counts.get(kind, 0) + 1
    named: set[str | None] = set()
    out = []
    for kind, label in labels:
        if kind is None or kind in named:
            out.append(label)
        else:
            named.add(kind)
            out.append(f"{kind}{'s' if counts[kind] > 1 else ''} {label}")
    return out


def _join(prefix: str, parts: list[str], joiner: str, suffix: str, room: int, cut: bool) -> str | None:
    """prefix + parts + suffix within room; with cut, as many parts as fit and `and N more`; None if it cannot fit."""
    whole = prefix + joiner.join(parts) + suffix
    if len(whole) <= room:
        return whole
    if not cut:
        return None
    shown, used = 0, len(prefix) + len(suffix)
    for part in parts[:-1]:
        grown = used + len(part) + (len(joiner) if shown else 0)
        if grown + len(f" and {len(parts) - shown - 1} more") > room:
            break
        shown, used = shown + 1, grown
    if not shown:
        return None
    return f"{prefix}{joiner.join(parts[:shown])} and {len(parts) - shown} more{suffix}"


def _within(groups: list[_Group], budget: int, separator: int) -> list[str]:
    """The lines that fit the budget (separator: characters between lines); what does not is counted at the end."""
    said: list[str] = []
    used = 0
    for group in groups:  # lines are written only up to the budget: an object may break thousands of (rule, fix)
        used += len(group.text) + separator
        if used > budget:
            break
        said.append(group.text)
    else:
        return said
    room = budget - MAX_LINE - separator  # the closing count is one line of at most MAX_LINE
    kept: list[str] = []
    for text in said:
        room -= len(text) + separator
        if room < 0:
            break
        kept.append(text)
    return [*kept, _cut_line(groups[len(kept) :])]


def _cut_line(left: list[_Group]) -> str:
    """`… and 12 more violations (no-host-path, selinux-options): run iotsec check for all`."""
    count = sum(len(g.members) for g in left)
    line = f"… and {count} more violation{'s' if count != 1 else ''} ({{}}): run iotsec check for all"
    rules = _distinct(g.rule for g in left)
    return line.format(_join("", rules, ", ", "", MAX_LINE - len(line) + 2, cut=True) or rules[0])


def _distinct(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean(text: str) -> str:
    """No control characters (the API server drops such a warning) and valid UTF-8 (lone surrogates from JSON)."""
    text = "".join(" " if unicodedata.category(c) == "Cc" else c for c in text)
    return text.encode("utf-8", "replace").decode("utf-8")


# ---------------------------------------------------------------- container names


def container_names(obj: Any, violations: Iterable[Violation]) -> dict[str, str]:
    """The names of the containers the violations' paths point into: `spec.template.spec.containers[2]` → `mqtt`."""
    names: dict[str, str] = {}
    for violation in violations:
        match = _CONTAINER.match(violation.path)
        if match is None or match["at"] in names:
            continue
        container = _at(obj, match["at"])
        name = container.get("name") if isinstance(container, dict) else None
        if isinstance(name, str) and name:
            names[match["at"]] = name
    return names


def _at(node: Any, path: str) -> Any:
    for key, index in _STEP.findall(path):
        if index:
            node = node[int(index)] if isinstance(node, list) and int(index) < len(node) else None
        else:
            node = node.get(key) if isinstance(node, dict) else None
    return node


# ---------------------------------------------------------------- many objects at once (iotsec check)


class Judged(Protocol):
    @property
    def namespace(self) -> str | None: ...

    @property
    def decision(self) -> Decision: ...


def summarise_membership(checked: Iterable[Judged]) -> list[str]:
    """`domain-membership` once per namespace, for an answer about many objects (each object's own lines leave it
    out: `v.rule != MEMBERSHIP_RULE`): `[X1369-9.4.1-1 domain-membership] add … — namespace iot belongs to no
    SecurityDomain (12 objects)`."""
    first: dict[str, Violation] = {}
    objects: dict[str, int] = {}
    for judged in checked:
        for violation in judged.decision.violations:
            if violation.rule == MEMBERSHIP_RULE:
                namespace = judged.namespace or ""
                first.setdefault(namespace, violation)
                objects[namespace] = objects.get(namespace, 0) + 1
                break
    return [
        f"[{v.control} {v.rule}] {v.fix} — {v.message} ({objects[ns]} object{'s' if objects[ns] > 1 else ''})"
        for ns, v in sorted(first.items())
    ]
