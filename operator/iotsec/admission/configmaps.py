"""Secrets that travel through ConfigMaps (no-literal-secrets, X1369-9.1.1.2-3).

Anyone who may read ConfigMaps in a namespace reads every value in them, so a password in a ConfigMap is a password
in clear, whichever way a pod takes it in. Checked at both ends: a ConfigMap's own keys and the settings of the
configuration files it holds (`config_map_secrets`), and a pod's `env[].valueFrom.configMapKeyRef` and
`envFrom[].configMapRef` (`check_config_fed`, which knows a ConfigMap's keys from the snapshot's summaries).

A value of one line (a trailing line end, as YAML's `KEY: |` leaves, does not count) is judged as the key's value,
and as a one-line file. Configuration files are read line by line, never parsed: `name=value`, `name: value` and
`name:value` lines of properties, .env, INI, TOML, YAML and pretty-printed JSON, `secret_name value` lines (Mosquitto's
`remote_password`, properties' whitespace separator) where the name says it holds a secret, and `"password": "..."`
entries inside a JSON one-liner or a flow mapping (`mqtt: {password: x}`) on any line, in the first MAX_SCANNED_CHARS
of a value. No nesting, anchors, block scalars or XML, so the cost is linear in that bounded prefix whatever the file
holds.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from iotsec.admission.context import ConfigMapSummary, Context
from iotsec.admission.model import Finding
from iotsec.admission.secrets import embedded_secret, literal_secret, names_a_secret, secret_name
from iotsec.admission.workloads import PodSpec, containers

MAX_SCANNED_CHARS = 256 * 1024  # of one value; a larger file is read up to there (a ConfigMap holds at most 1 MiB)
MAX_LINE_CHARS = 4096  # longer lines are blobs (base64, minified JSON), not settings someone wrote
MAX_LISTED = 3  # names a message lists before "and N more" (a warning line is cut at 256 characters)
MAX_SUMMARY_KEYS = 64  # secret key names kept per ConfigMap: enough to name them, bounded for the webhook's memory
SETTING = re.compile(
    r"""^\s*(?:-\s+)?(?:export\s+)?["']?(?P<name>[A-Za-z0-9_.\-\[\]]{1,200})["']?\s*[=:]\s*(?P<value>.*)$"""
)
# `remote_password Hunter2` (Mosquitto), `db.password Hunter2` (Java properties): one token after a name; taken only
# where the name says it holds a secret, so prose (`listener 1883`, `Password must be set`) is not a setting.
SPACED_SETTING = re.compile(r"""^\s*(?P<name>[A-Za-z0-9_.\-\[\]]{1,200})[ \t]+(?P<value>[^\s=:]\S*)\s*$""")
COMMENT_STARTS = ("#", ";", "//", "!")
NO_SECRETS = ConfigMapSummary()


def config_map_secrets(obj: dict[str, Any], out: list[Finding]) -> None:
    """Findings for a ConfigMap's data: keys holding a literal secret, files setting one."""
    for key, value in _data(obj):
        single = not _is_file(value)
        if single and _holds_secret(key, value[:MAX_SCANNED_CHARS]):
            out.append(
                Finding(
                    "no-literal-secrets",
                    f"data[{key}]",
                    f"{_short(key)} holds a literal secret in a ConfigMap, readable by anyone who can read ConfigMaps",
                    f"move {_short(key)} to a Secret and reference it with secretKeyRef/secretRef",
                )
            )
            continue
        settings = list(_secret_settings(value.strip() if single else value))  # a one-line file is a file too
        if settings:
            out.append(_file_finding(key, settings))


def summarise(obj: dict[str, Any]) -> ConfigMapSummary:
    """The keys of a ConfigMap that a pod's envFrom would turn into env vars holding a literal secret."""
    keys = [key for key, value in _data(obj) if not _is_file(value) and literal_secret(key, value[:MAX_SCANNED_CHARS])]
    if not keys:
        return NO_SECRETS
    return ConfigMapSummary(tuple(sys.intern(key) for key in sorted(keys)[:MAX_SUMMARY_KEYS]))


def check_config_fed(pod: PodSpec, namespace: str | None, ctx: Context, out: list[Finding]) -> None:
    """Findings for a pod spec whose containers take a secret from a ConfigMap of `namespace`."""
    known: Mapping[tuple[str, str], ConfigMapSummary] = ctx.snapshot.config_maps if ctx.snapshot else {}
    for path, container in containers(pod):
        _key_refs(path, container.get("env"), namespace or "", known, out)
        _env_from(path, container.get("envFrom"), namespace or "", known, out)


def _data(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    data = obj.get("data") or {}
    if not isinstance(data, dict):
        raise TypeError("data must be an object")
    for key, value in data.items():
        if isinstance(value, str):
            yield str(key), value


def _is_file(value: str) -> bool:
    """A value of several lines; `Hunter2\\n` (what YAML's `KEY: |` gives) is one value with a line end."""
    text = value[:MAX_SCANNED_CHARS].strip()
    return "\n" in text or "\r" in text


def _holds_secret(key: str, value: str) -> bool:
    """The key's value is a secret; one only set inside it (`{"password": ...}` under `config.json`) is reported by
    the line, as a file's."""
    return literal_secret(key, value) and (names_a_secret(key) or embedded_secret(value.strip()) is None)


def _secret_settings(text: str) -> Iterator[tuple[int, str]]:
    """(line number, setting name) of each line of a configuration file that sets a secret literally."""
    for number, line in enumerate(text[:MAX_SCANNED_CHARS].splitlines(), 1):
        if len(line) > MAX_LINE_CHARS or line.lstrip().startswith(COMMENT_STARTS):
            continue
        name = _line_secret(line)
        if name is not None:
            yield number, name


def _line_secret(line: str) -> str | None:
    """The name a line sets a literal secret under: `name=value`, `name: value`, `secret_name value`, or a mapping
    entry inside it (`mqtt: {password: x}`, a minified JSON line)."""
    inside = embedded_secret(line)
    if inside is not None:
        return inside
    match = SETTING.match(line)
    if match and literal_secret(match["name"], _setting_value(match["value"])):
        return match["name"]
    spaced = None if match else SPACED_SETTING.match(line)
    if spaced and names_a_secret(spaced["name"]) and literal_secret(spaced["name"], _setting_value(spaced["value"])):
        return spaced["name"]
    return None


def _setting_value(raw: str) -> str:
    """The value as the program reads it: quotes, a trailing comma (JSON) and a trailing comment removed."""
    text = raw.strip().removesuffix(",").strip()
    if text[:1] in ("'", '"'):
        end = text.find(text[0], 1)
        return text[1:end] if end > 0 else text[1:]
    comment = re.search(r"\s[#;]", text)
    return text[: comment.start()] if comment else text


def _file_finding(key: str, settings: list[tuple[int, str]]) -> Finding:
    named = _listed([f"{_short(name, 40)} (line {number})" for number, name in settings])
    return Finding(
        "no-literal-secrets",
        f"data[{key}]",
        f"{_short(key)} sets {named} in clear in a ConfigMap",
        f"move {_short(key)} into a Secret mounted as a volume, or read the values from env vars fed by secretKeyRef",
    )


def _lookup(known: Mapping[tuple[str, str], ConfigMapSummary], namespace: str, name: str) -> ConfigMapSummary | None:
    """A ConfigMap's summary; one of a file without namespace stands for the namespace the objects go to."""
    summary = known.get((namespace, name))
    if summary is None and namespace:
        summary = known.get(("", name))
    return summary


def _key_refs(
    path: str, env: Any, namespace: str, known: Mapping[tuple[str, str], ConfigMapSummary], out: list[Finding]
) -> None:
    for index, entry in enumerate(env if isinstance(env, list) else ()):
        ref = ((entry.get("valueFrom") or {}) if isinstance(entry, dict) else {}).get("configMapKeyRef")
        if not isinstance(ref, dict):
            continue
        variable, key, config_map = str(entry.get("name")), str(ref.get("key")), str(ref.get("name"))
        summary = _lookup(known, namespace, config_map)
        says = secret_name if summary is not None else names_a_secret  # no value at hand: not DATABASE_URL
        known_secret = summary is not None and key in summary.secret_keys  # APP_CONFIG={"password": ...}
        if not (known_secret or says(variable) or says(key)):
            continue
        if summary is not None and secret_name(key) and key not in summary.secret_keys:
            continue  # the ConfigMap is known and that key's value is no literal secret (a URL, a number, empty)
        out.append(
            Finding(
                "no-literal-secrets",
                f"{path}.env[{index}].valueFrom.configMapKeyRef",
                f"{_short(variable)} comes from ConfigMap {_short(config_map)} key {_short(key)}: "
                "a secret anyone who can read ConfigMaps can read",
                f"move {_short(key)} from ConfigMap {_short(config_map)} to a Secret and use valueFrom.secretKeyRef",
            )
        )


def _env_from(
    path: str, sources: Any, namespace: str, known: Mapping[tuple[str, str], ConfigMapSummary], out: list[Finding]
) -> None:
    for index, source in enumerate(sources if isinstance(sources, list) else ()):
        ref = source.get("configMapRef") if isinstance(source, dict) else None
        if not isinstance(ref, dict):
            continue
        config_map = str(ref.get("name"))
        summary = _lookup(known, namespace, config_map)
        if summary is None or not summary.secret_keys:
            continue  # not known (yet): the ConfigMap's own admission judges its keys
        prefix = str(source.get("prefix") or "")
        keys = _listed([_short(key, 40) for key in summary.secret_keys])
        out.append(
            Finding(
                "no-literal-secrets",
                f"{path}.envFrom[{index}].configMapRef",
                f"ConfigMap {_short(config_map)} feeds "
                f"{_listed([_short(prefix + key, 40) for key in summary.secret_keys])} as literal secrets",
                f"move {keys} from ConfigMap {_short(config_map)} to a Secret and use envFrom.secretRef",
            )
        )


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return f"{shown} and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else shown


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else f"{text[: limit - 1]}…"
