"""Offline validation of iotsec custom resources, as strict as the API server and then some.

The order mirrors what the server does with a create: apply schema defaults, check the structural
schema (types, enums, patterns, formats, bounds), list-type uniqueness and the CEL rules
(`x-kubernetes-validations`, evaluated here with cel-python from the generated schema itself, so
a rule is written once). Then the spec is parsed into its typed model and the model's
cross-reference checks run (things CEL cannot express cheaply). Unknown fields, which the server
would silently prune, are reported as errors: they are almost always typos.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from iotsec.api import celrules
from iotsec.api.common import (
    API_VERSION,
    CRON_PATTERN,
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    DURATION_PATTERN,
    QUANTITY_PATTERN,
    Model,
)
from iotsec.api.crd import Schema, resource_schema
from iotsec.api.kinds import BY_KIND, KindInfo

# re-exported: validation is where callers find what it answers
from iotsec.api.problems import InvalidResourceError as InvalidResourceError
from iotsec.api.problems import Problem as Problem
from iotsec.api.problems import Resource as Resource
from iotsec.api.problems import is_iotsec as is_iotsec

if TYPE_CHECKING:  # jsonschema costs a twentieth of a second to import: loaded when a resource is checked
    import jsonschema

_NAME = re.compile(DNS_SUBDOMAIN_PATTERN)
_PATTERN_HINTS = {
    CRON_PATTERN: "a cron schedule: 5 fields (minute hour day-of-month month day-of-week) or @daily, @hourly, ...",
    DURATION_PATTERN: "a duration such as 90d, 12h or 1h30m (units w, d, h, m, s)",
    DNS_LABEL_PATTERN: "a DNS-1123 label: lowercase letters, digits and '-', alphanumeric at both ends",
    DNS_SUBDOMAIN_PATTERN: "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.'",
    QUANTITY_PATTERN: "a quantity such as 500m, 2, 512Mi or 10Gi",
}


def parse_resource(obj: dict[str, Any]) -> Resource:
    """Validate and parse one custom resource; raise InvalidResourceError listing every problem."""
    problems, resource = _check(obj)
    if problems or resource is None:
        raise InvalidResourceError(problems)
    return resource


def parse_spec(obj: dict[str, Any]) -> Resource:
    """`parse_resource` of what a resource means: its kind, name, namespace and spec, without its status and the
    metadata every write changes (resourceVersion, kopf's annotations). For callers that read no more than that (the
    operator's background scan and grant check, on every pass over every resource): a status write no longer makes
    them judge the resource anew, since answers are remembered per content (issue 18)."""
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(meta, dict):
        return parse_resource(obj)
    stable = {key: value for key, value in obj.items() if key not in ("metadata", "status")}
    stable["metadata"] = {key: meta[key] for key in ("name", "namespace") if key in meta}
    return parse_resource(stable)


def validate_resource(obj: dict[str, Any]) -> list[Problem]:
    """Every problem of one custom resource, sorted by path; empty when it is valid."""
    return _check(obj)[0]


_CHECKED: dict[str, tuple[list[Problem], Resource | None]] = {}
CHECKED_KEPT = 8192  # answers remembered; beyond, the memory starts again


def _check(obj: dict[str, Any]) -> tuple[list[Problem], Resource | None]:
    """The answer for `obj`, judged once per content: its CEL rules cost tens of milliseconds (39 for the example
    tenant), and the operator's background scan and grant check judge every custom resource on each pass (issue 18).
    Keyed by the content itself, never by uid and resourceVersion: an UPDATE's AdmissionReview carries the stored
    object's version with a new spec. Content that is not JSON (a YAML date) is judged each time."""
    try:
        key = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return _judge(obj)
    found = _CHECKED.get(key)
    if found is None:
        found = _judge(obj)
        if len(_CHECKED) >= CHECKED_KEPT:
            _CHECKED.clear()
        _CHECKED[key] = found
    return list(found[0]), found[1]


def _judge(obj: dict[str, Any]) -> tuple[list[Problem], Resource | None]:
    if not isinstance(obj, dict):
        return [Problem("", f"expected an object, got {type(obj).__name__}")], None
    info, problems = _identify(obj)
    if info is None:
        return problems, None
    body = apply_defaults(_schema(info.kind), obj)
    problems += _schema_problems(info, body)
    problems += list(_walk(_schema(info.kind), body, ""))
    if problems:
        return sorted(set(problems)), None
    try:
        spec = info.spec.model_validate(body["spec"])
    except ValidationError as exc:
        return sorted(_pydantic_problems(exc, "spec")), None
    problems = [Problem(_join("spec", path), message) for path, message in _cross_checks(spec)]
    if problems:
        return sorted(problems), None
    metadata = body.get("metadata") or {}
    return [], Resource(info, metadata["name"], metadata.get("namespace"), spec, body)


def _identify(obj: dict[str, Any]) -> tuple[KindInfo | None, list[Problem]]:
    """The kind's table entry (None when apiVersion or kind is wrong) and any metadata problems."""
    problems: list[Problem] = []
    if obj.get("apiVersion") != API_VERSION:
        problems.append(Problem("apiVersion", f"must be {API_VERSION}, got {obj.get('apiVersion')!r}"))
    info = BY_KIND.get(obj.get("kind", ""))
    if info is None:
        known = ", ".join(BY_KIND)
        problems.append(Problem("kind", f"must be one of {known}, got {obj.get('kind')!r}"))
    if problems or info is None:
        return None, problems
    metadata = obj.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    if not isinstance(name, str) or not name:
        problems.append(Problem("metadata.name", "is required"))
    elif len(name) > 253 or not _NAME.match(name):
        problems.append(Problem("metadata.name", f"{name!r} is not a DNS-1123 subdomain (lowercase, digits, - and .)"))
    if not info.namespaced and isinstance(metadata, dict) and metadata.get("namespace"):
        problems.append(Problem("metadata.namespace", f"{info.kind} is cluster-scoped: remove the namespace"))
    return info, problems


@cache
def _schema(kind: str) -> Schema:
    return resource_schema(BY_KIND[kind])


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    import jsonschema

    return jsonschema.Draft7Validator(_schema(kind), format_checker=format_checker())


@cache
def format_checker() -> jsonschema.FormatChecker:
    """The formats the CRDs use, checked as the API server checks them (built on first need)."""
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    checker.checks("cidr", raises=ValueError)(_is_cidr)
    checker.checks("date-time", raises=ValueError)(_is_date_time)
    return checker


def _is_cidr(value: object) -> bool:
    if isinstance(value, str):
        ipaddress.ip_network(value, strict=False)
        if "/" not in value:
            raise ValueError("no prefix length")
    return True


def _is_date_time(value: object) -> bool:
    if isinstance(value, str):
        if "T" not in value.upper() or not re.search(r"(Z|[+-]\d\d:\d\d)$", value, re.IGNORECASE):
            raise ValueError("not RFC 3339")
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    return True


def _schema_problems(info: KindInfo, body: dict[str, Any]) -> list[Problem]:
    return [
        Problem(_path(error.absolute_path), _describe(error))
        for error in _validator(info.kind).iter_errors(body)
        if list(error.absolute_path)[:1] != ["status"]
    ]


def _describe(error: jsonschema.ValidationError) -> str:
    value = error.instance
    match error.validator:
        case "enum":
            choices = error.validator_value
            options = ", ".join(str(v) for v in choices) if isinstance(choices, list) else str(choices)
            return f"must be one of: {options} (got {value!r})"
        case "pattern":
            hint = _PATTERN_HINTS.get(str(error.validator_value))
            return f"{value!r} is not {hint}" if hint else f"{value!r} does not match {error.validator_value}"
        case "format":
            return f"{value!r} is not a valid {error.validator_value}"
        case "required":
            return error.message.replace("is a required property", "is required")
        case "type":
            return f"must be of type {error.validator_value}, got {type(value).__name__} {value!r}"
        case _:
            return error.message


def _walk(schema: Schema, value: Any, path: str) -> Iterator[Problem]:
    """Unknown fields, list-type uniqueness and CEL rules, node by node."""
    if isinstance(value, dict) and "properties" in schema:
        for key, sub_value in value.items():
            sub_schema = schema["properties"].get(key)
            if sub_schema is None:
                yield Problem(_join(path, key), "unknown field (the API server would drop it silently)")
            elif not (path == "" and key in ("metadata", "status")):
                yield from _walk(sub_schema, sub_value, _join(path, key))
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, sub_value in value.items():
            yield from _walk(schema["additionalProperties"], sub_value, f"{path}[{key}]")
    elif isinstance(value, list) and "items" in schema:
        yield from _list_type_problems(schema, value, path)
        for index, item in enumerate(value):
            yield from _walk(schema["items"], item, f"{path}[{index}]")
    for rule in schema.get("x-kubernetes-validations", ()):
        yield from _cel_problems(rule, value, path)


def _list_type_problems(schema: Schema, items: list[Any], path: str) -> Iterator[Problem]:
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        seen: list[Any] = []
        for index, item in enumerate(items):
            if item in seen:
                yield Problem(f"{path}[{index}]", f"duplicate value {item!r}")
            seen.append(item)
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        first: dict[tuple[Any, ...], int] = {}
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in first:
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
                yield Problem(f"{path}[{index}]", f"duplicate entry {shown} (first at [{first[key]}])")
            first.setdefault(key, index)


def _cel_problems(rule: dict[str, str], value: Any, path: str) -> Iterator[Problem]:
    expression = rule["rule"]
    if "oldSelf" in expression:
        return  # transition rules need the stored object; only the API server can check them
    where = path + rule.get("fieldPath", "") if rule.get("fieldPath", "").startswith(".") else path
    from celpy.adapter import json_to_cel
    from celpy.celtypes import BoolType

    try:
        result = celrules.program(expression).evaluate({"self": json_to_cel(value)})
    except Exception as exc:  # a CEL runtime error is a failed rule on the server too
        yield Problem(where, f"{rule['message']} (rule error: {type(exc).__name__})")
        return
    if not (isinstance(result, bool | BoolType) and bool(result)):
        yield Problem(where, rule["message"])


def apply_defaults(schema: Schema, obj: Any) -> Any:
    """A copy of `obj` with the schema's defaults filled in, as the API server defaults on create."""
    result = copy.deepcopy(obj)
    _default_in_place(schema, result)
    return result


def _default_in_place(schema: Schema, value: Any) -> None:
    if isinstance(value, dict) and "properties" in schema:
        for key, sub_schema in schema["properties"].items():
            if key not in value and "default" in sub_schema:
                value[key] = copy.deepcopy(sub_schema["default"])
            if key in value:
                _default_in_place(sub_schema, value[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default_in_place(schema["items"], item)


def _pydantic_problems(exc: ValidationError, prefix: str) -> list[Problem]:
    problems = []
    for error in exc.errors(include_url=False):
        message = error["msg"].removeprefix("Value error, ")
        problems.append(Problem(_join(prefix, _path(error["loc"])), message))
    return problems


def _cross_checks(spec: Model) -> list[tuple[str, str]]:
    check = getattr(spec, "cross_reference_problems", None)
    return list(check()) if check else []


def _path(parts: Any) -> str:
    text = ""
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else _join(text, str(part))
    return text


def _join(prefix: str, suffix: str) -> str:
    if not prefix:
        return suffix.lstrip(".")
    if not suffix:
        return prefix
    return f"{prefix}{suffix}" if suffix.startswith(("[", ".")) else f"{prefix}.{suffix}"
