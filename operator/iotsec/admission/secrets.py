"""Whether a name and its value are a literal secret (no-literal-secrets, X1369-9.1.1.2-3).

One place decides for env vars, command-line flags and ConfigMap keys, on the name and the value together."""

from __future__ import annotations

import re
from functools import lru_cache

SECRET_NAME = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|access[_-]?key|auth[_-]?key)", re.I
)
NOT_A_SECRET_NAME = re.compile(r"(_FILE|_PATH|_DIR|_URL|_NAME|_ID|_TTL|_LENGTH)$", re.I)
SECRET_FLAG = re.compile(
    r"^--?(?P<name>[A-Za-z0-9_.-]*(pass(word|wd)?|secret|token|api[_-]?key|private[_-]?key|credential|"
    r"access[_-]?key))=(?P<value>.+)$",
    re.I,
)


@lru_cache(maxsize=8192)
def secret_name(name: str) -> bool:
    """Whether a variable, key or flag name says it holds a secret; cached: every pod repeats its names."""
    return bool(SECRET_NAME.search(name)) and not NOT_A_SECRET_NAME.search(name)


def secret_value(value: object) -> bool:
    """Whether a value, under a secret name, looks like the secret itself rather than a reference to one."""
    if not isinstance(value, str) or len(value.strip()) < 4:
        return False
    text = value.strip()
    return not (text.startswith(("/", "./", "$(", "${")) or text.lower() in ("true", "false", "none", "null"))


def literal_secret(name: str, value: object) -> bool:
    """The decision: `name=value` carries a secret in clear."""
    return secret_name(name) and secret_value(value)


def secret_flag(argument: str) -> str | None:
    """The flag's name when a command-line argument passes a literal secret (`--db-password=hunter2`)."""
    match = SECRET_FLAG.match(argument) if argument.startswith("-") else None
    if match is None or not secret_value(match.group("value")):
        return None
    return match.group("name")
