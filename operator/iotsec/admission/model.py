"""Findings, violations and the decision an admission request gets."""

from __future__ import annotations

from dataclasses import dataclass, field

from iotsec.admission.rules import RULES


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

    @property
    def message(self) -> str:
        if not self.violations:
            return ""
        head = f"iotsec: {len(self.violations)} X.1369 violation{'s' if len(self.violations) > 1 else ''}"
        return "\n".join([head, *(v.line() for v in self.violations)])
