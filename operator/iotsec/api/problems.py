"""What validating a custom resource answers (a Problem, a parsed Resource) and how to recognise one, without the
models: code that only passes these along (`iotsec check` of workloads, the admission snapshot) stays free of
pydantic, jsonschema and CEL until a custom resource is actually parsed (issue 18)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iotsec.api.common import Model
    from iotsec.api.kinds import KindInfo


@dataclass(frozen=True, order=True)
class Problem:
    """One reason a custom resource is invalid: where (a field path) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidResourceError(ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True)
class Resource:
    """A parsed, valid custom resource."""

    info: KindInfo
    name: str
    namespace: str | None
    spec: Model
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.info.kind


def is_iotsec(obj: Any) -> bool:
    return isinstance(obj, dict) and str(obj.get("apiVersion", "")).startswith("iotsec.io/")
