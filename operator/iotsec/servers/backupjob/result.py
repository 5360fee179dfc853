"""What an operation reports: the Result JSON, the outcome it is collected in, and where it is written.

The operator reads a Job's result from its container's termination message, which the kubelet cuts at 4096 bytes;
a cut message is no longer JSON, so `Result.to_message` shortens it to fit instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from time import monotonic

from iotsec.model.time import now, rfc3339

MESSAGE_LIMIT = 4096  # bytes of a container's termination message the kubelet keeps


@dataclass
class Result:
    """The machine-readable outcome of one operation, written as JSON for the operator."""

    operation: str
    succeeded: bool
    started: str
    finished: str
    duration_seconds: float
    targets: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    restore_seconds: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def to_message(self, limit: int = MESSAGE_LIMIT) -> str:
        """Compact JSON of at most ``limit`` bytes: the kubelet cuts a termination message at 4096 bytes, and a
        cut message is no longer JSON. Long errors are shortened first, then per-target details dropped."""
        body = asdict(self)
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
        errors = [_shorten(error, 300) for error in self.errors[:5]]
        if len(self.errors) > 5:
            errors.append(f"... and {len(self.errors) - 5} more error(s)")
        body["errors"] = errors
        text = json.dumps(body, separators=(",", ":"))
        if len(text.encode()) <= limit:
            return text
        body["targets"] = [{"name": t.get("name"), "snapshot_id": t.get("snapshot_id")} for t in self.targets]
        body["errors"] = [_shorten(error, 120) for error in errors]
        text = json.dumps(body, separators=(",", ":"))
        while len(text.encode()) > limit and body["errors"]:
            body["errors"].pop()
            text = json.dumps(body, separators=(",", ":"))
        return text


def _shorten(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def stamp(moment: datetime) -> str:
    """A Result's time: RFC 3339 in UTC with milliseconds."""
    return rfc3339(moment, "milliseconds")


class OperationOutcome:
    """Collects per-target entries and errors while an operation runs; every error passes through ``redact``."""

    def __init__(self, operation: str, redact: Callable[[str], str]) -> None:
        self.operation = operation
        self.started = now()
        self._clock = monotonic()
        self._redact = redact
        self.entries: dict[str, dict] = {}
        self.errors: list[str] = []
        self.restore_seconds: float | None = None

    def entry(self, name: str) -> dict:
        return self.entries.setdefault(
            name, {"name": name, "snapshot_id": None, "files": None, "bytes": None, "snapshots": None, "error": None}
        )

    def fail(self, message: str, target: str | None = None) -> None:
        message = self._redact(message)
        if target is None:
            self.errors.append(message)
            return
        self.errors.append(f"{target}: {message}")
        entry = self.entry(target)
        entry["error"] = message if entry["error"] is None else f"{entry['error']}; {message}"

    def result(self) -> Result:
        finished = now()
        return Result(
            operation=self.operation,
            succeeded=not self.errors,
            started=stamp(self.started),
            finished=stamp(finished),
            duration_seconds=round(monotonic() - self._clock, 3),
            targets=list(self.entries.values()),
            errors=list(self.errors),
            restore_seconds=self.restore_seconds,
        )


def write_result(path: str | None, text: str) -> None:
    """Replace ``path`` atomically, or write it in place when it is a file the kubelet mounted
    (/dev/termination-log: its folder is not ours and a bind-mounted file cannot be renamed over)."""
    if not path:
        return
    if os.path.isfile(path) and not os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
        _write_in_place(path, text)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, encoding="utf-8") as handle:
        handle.write(text + "\n")
    try:
        os.replace(handle.name, path)
    except OSError:  # EBUSY: a bind mount
        os.unlink(handle.name)
        _write_in_place(path, text)


def _write_in_place(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
