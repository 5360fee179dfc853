"""The conformance report for people: a terminal summary and Markdown, rendered from the report document alone.

The document (`iotsec.io/conformance/v1`, built by conformance/document.py) is the only input, so a saved
`-o json` renders the same as a live run. Every string in it may come from the cluster (object names,
messages), so both outputs neutralise it: no terminal escapes in the summary, no Markdown or HTML syntax in
the Markdown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

Document = Mapping[str, Any]

# Worst first, as the document sorts assessments; a control's verdict is the first of these among its scopes.
VERDICTS: tuple[str, ...] = ("not-met", "partial", "met", "not-applicable", "out-of-scope")
FAILING: tuple[str, ...] = ("not-met", "partial")
SCOPE_KINDS: tuple[str, ...] = ("cluster", "domain", "tenant", "namespace")

WIDTH = 120
_ANSI = {"not-met": "\x1b[1;31m", "partial": "\x1b[33m", "met": "\x1b[32m", "not-applicable": "\x1b[2m"}
_RESET = "\x1b[0m"
# C0/C1 controls and DEL: a name or message must not move the cursor or recolour the terminal.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def label(verdict: str) -> str:
    return verdict.replace("-", " ")


def verdict_rank(verdict: str) -> int:
    return VERDICTS.index(verdict) if verdict in VERDICTS else len(VERDICTS)


def totals_of(document: Document) -> dict[str, int]:
    given = document.get("totals") or {}
    return {v: int(given.get(v, 0)) for v in VERDICTS}


def controls_of(document: Document) -> list[Mapping[str, Any]]:
    return list(document.get("controls") or [])


def assessments_of(control: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(control.get("assessments") or [])


def scope_title(scope: Mapping[str, Any]) -> str:
    kind = str(scope.get("kind") or "cluster")
    return "cluster" if kind == "cluster" else f"{kind} {scope.get('name') or ''}"


def object_title(obj: Mapping[str, Any]) -> str:
    """`Kind ns/name` (`Kind name` when cluster-scoped), marked when the object is what would be written."""
    namespace = obj.get("namespace")
    where = f"{namespace}/" if namespace else ""
    planned = " (planned)" if obj.get("planned") else ""
    return f"{obj.get('kind') or '?'} {where}{obj.get('name') or ''}{planned}"


def failing_controls(document: Document) -> list[Mapping[str, Any]]:
    """Controls not met, then partial; in document order within each (the document orders by id)."""
    failing = [c for c in controls_of(document) if c.get("verdict") in FAILING]
    return sorted(failing, key=lambda c: verdict_rank(str(c.get("verdict"))))


def failing_assessments(control: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    failing = [a for a in assessments_of(control) if a.get("verdict") in FAILING]
    return sorted(failing, key=lambda a: verdict_rank(str(a.get("verdict"))))


def _unique(names: Iterable[str]) -> list[str]:
    """In first-seen order: a scope judged twice (by two probes) is named once."""
    return list(dict.fromkeys(names))


def limited_to(document: Document) -> str:
    """The view the report was limited to (`iotsec report --tenant/--domain/--namespace`), "" for all."""
    filters = document.get("filters") or {}
    return ", ".join(f"{key} {filters[key]}" for key in ("domain", "tenant", "namespace") if filters.get(key))


def evidence_line(evidence: Mapping[str, Any]) -> str:
    objects = ", ".join(object_title(o) for o in evidence.get("objects") or [])
    observed = f" (observed {evidence['observedAt']})" if evidence.get("observedAt") else ""
    return f"{evidence.get('text') or ''}{observed}" + (f" [{objects}]" if objects else "")


def source_line(document: Document) -> str:
    source = document.get("source") or {}
    return f"{source.get('mode') or '?'} {source.get('from') or ''}".rstrip()


def unavailable_of(document: Document) -> list[tuple[str, str]]:
    return sorted((str(k), str(v)) for k, v in ((document.get("source") or {}).get("unavailable") or {}).items())


# ---- terminal summary ----


def text(document: Document, color: bool = False) -> str:
    """The summary a person reads in a terminal: totals, per area totals, what is not met or partial and where,
    and how to see everything. Lines fit 120 columns; ANSI colour only when `color`."""
    paint = _painter(color)
    catalog = document.get("catalog") or {}
    lines = [
        f"{_plain(catalog.get('standard') or 'X.1369')} conformance: {_plain(source_line(document))}",
        f"generated {_plain(document.get('generatedAt') or '?')}",
        f"{len(controls_of(document))} controls: {_counts(totals_of(document), paint)}",
    ]
    if limited_to(document):
        lines.append(f"limited to {_plain(limited_to(document))}")
    lines += [f"  cannot read {_plain(kind)}: {_plain(why)}" for kind, why in unavailable_of(document)]
    lines.append("")
    lines += [f"  {area_line}" for area_line in _area_lines(document, paint)]
    for control in failing_controls(document):
        lines.append("")
        lines += _control_lines(control, paint)
    lines += ["", "Every control with its evidence: iotsec report -o html > report.html (or -o json, -o markdown)"]
    return "\n".join(_clip(line) for line in lines) + "\n"


Paint = Callable[[str, str], str]


def _painter(color: bool) -> Paint:
    def paint(verdict: str, words: str) -> str:
        return f"{_ANSI[verdict]}{words}{_RESET}" if color and verdict in _ANSI else words

    return paint


def _counts(totals: Mapping[str, int], paint: Paint) -> str:
    return ", ".join(paint(v, f"{totals.get(v, 0)} {label(v)}") for v in VERDICTS)


def _area_lines(document: Document, paint: Paint) -> list[str]:
    areas = list(document.get("areas") or [])
    names = [_plain(f"{a.get('id')} {a.get('title')}") for a in areas]
    width = max((len(n) for n in names), default=0)
    lines = []
    for name, area in zip(names, areas, strict=True):
        totals = area.get("totals") or {}
        counts = "  ".join(paint(v, f"{label(v)} {int(totals.get(v, 0))}") for v in VERDICTS)
        lines.append(f"{name.ljust(width)}  {counts}")
    return lines


def _control_lines(control: Mapping[str, Any], paint: Paint) -> list[str]:
    verdict = str(control.get("verdict"))
    head = paint(verdict, label(verdict).upper())
    lines = [f"{head}  {_plain(control.get('id'))}  {_plain(control.get('requirement'))}"]
    failing = failing_assessments(control)
    for kind in FAILING:
        scopes = _unique(scope_title(a.get("scope") or {}) for a in failing if a.get("verdict") == kind)
        if scopes:
            lines.append(f"    {label(kind)} in: {_listed(scopes, 8)}")
    first = next((e for a in failing for e in a.get("evidence") or []), None)
    if first is not None:
        objects = ", ".join(object_title(o) for o in first.get("objects") or [])
        lines.append(f"    {_plain(first.get('text'))}" + (f" [{_plain(objects)}]" if objects else ""))
    elif failing:
        lines.append(f"    {_plain(failing[0].get('summary'))}")
    return lines


def _listed(names: Sequence[str], most: int, budget: int = 90) -> str:
    """At most `most` names and about `budget` characters, then how many more."""
    shown: list[str] = []
    for name in names[:most]:
        if shown and len(", ".join([*shown, name])) > budget:
            break
        shown.append(_plain(name))
    rest = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{rest} more)" if rest else "")


def _plain(value: Any) -> str:
    """Cluster-provided text for a terminal: control characters (escape sequences, newlines) become spaces."""
    return _CONTROL_CHARS.sub(" ", str(value if value is not None else ""))


_SGR = re.compile(r"\x1b\[[0-9;]*m")


def _clip(line: str) -> str:
    """At most WIDTH visible columns; the colour sequences this module added do not count and are kept whole."""
    visible = 0
    out: list[str] = []
    position = 0
    while position < len(line):
        sgr = _SGR.match(line, position)
        if sgr:
            out.append(sgr.group())
            position = sgr.end()
            continue
        if visible == WIDTH - 1 and len(_SGR.sub("", line[position:])) > 1:
            out.append("\u2026" + (_RESET if _RESET in line else ""))
            break
        out.append(line[position])
        visible += 1
        position += 1
    return "".join(out)


# ---- Markdown ----

# Backslash-escape the characters that are Markdown syntax anywhere in a line, so cluster-provided text never
# becomes a link, an emphasis, code, raw HTML, an entity or a table cell boundary. Line-start syntax (#, -, +, 1.)
# needs none: escaped text never starts a line, every line begins with this module's own prefix.
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~])")


def md_escape(value: Any) -> str:
    """One line of literal text for Markdown (and a GFM table cell): newlines folded, syntax escaped."""
    flat = " ".join(_plain(value).split())
    return _MD_SPECIAL.sub(r"\\\1", flat)


def markdown(document: Document) -> str:
    """The whole report as Markdown: header, totals, a table per area and a section per failing control with
    its evidence. Deterministic: the same document gives the same bytes."""
    out: list[str] = ["# X.1369 conformance report", ""]
    out += _md_header(document)
    out += ["", "## Totals", "", "| verdict | controls |", "| --- | ---: |"]
    totals = totals_of(document)
    out += [f"| {label(v)} | {totals[v]} |" for v in VERDICTS]
    out += [f"| **all** | {len(controls_of(document))} |"]
    for area in document.get("areas") or []:
        out += ["", *_md_area(document, area)]
    failing = failing_controls(document)
    if failing:
        out += ["", "## Not met and partial controls"]
        for control in failing:
            out += ["", *_md_control(control)]
    return "\n".join(out) + "\n"


def _md_header(document: Document) -> list[str]:
    catalog = document.get("catalog") or {}
    lines = [
        f"- Standard: {md_escape(catalog.get('standard'))}, {md_escape(catalog.get('controls'))} controls",
        f"- Source: {md_escape(source_line(document))}",
        f"- Generated: {md_escape(document.get('generatedAt'))}",
        f"- Schema: {md_escape(document.get('apiVersion'))}",
    ]
    if limited_to(document):
        lines.append(f"- Limited to: {md_escape(limited_to(document))}")
    lines += [f"- Could not read {md_escape(kind)}: {md_escape(why)}" for kind, why in unavailable_of(document)]
    return lines


def _md_area(document: Document, area: Mapping[str, Any]) -> list[str]:
    totals = area.get("totals") or {}
    lines = [
        f"## {md_escape(area.get('id'))} {md_escape(area.get('title'))}",
        "",
        " · ".join(f"{label(v)}: {int(totals.get(v, 0))}" for v in VERDICTS),
        "",
        "| control | verdict | requirement | scopes not met |",
        "| --- | --- | --- | --- |",
    ]
    for control in controls_of(document):
        if control.get("area") != area.get("id"):
            continue
        not_met = _unique(
            scope_title(a.get("scope") or {}) for a in failing_assessments(control) if a["verdict"] == "not-met"
        )
        cells = [
            md_escape(control.get("id")),
            label(str(control.get("verdict"))),
            md_escape(control.get("requirement")),
            md_escape(_listed(not_met, 10)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _md_control(control: Mapping[str, Any]) -> list[str]:
    verdict = label(str(control.get("verdict")))
    lines = [
        f"### {md_escape(control.get('id'))}: {verdict}",
        "",
        f"Requirement: {md_escape(control.get('requirement'))}  ",
        f"Mechanism: {md_escape(control.get('k8sControl'))} (coverage: {md_escape(control.get('coverage'))})",
    ]
    for assessment in failing_assessments(control):
        lines += ["", *_md_assessment(assessment)]
    others = _others(assessments_of(control))
    if others:
        lines += ["", f"Other scopes: {others}."]
    return lines


def _md_assessment(assessment: Mapping[str, Any]) -> list[str]:
    scope = md_escape(scope_title(assessment.get("scope") or {}))
    lines = [f"**{scope}**: {label(str(assessment.get('verdict')))}: {md_escape(assessment.get('summary'))}"]
    if assessment.get("missing"):
        lines += ["", f"Missing: {md_escape(assessment.get('missing'))}"]
    evidence = list(assessment.get("evidence") or [])
    if evidence:
        lines.append("")
    for item in evidence:
        objects = "; ".join(md_escape(object_title(o)) for o in item.get("objects") or [])
        observed = f" (observed {md_escape(item['observedAt'])})" if item.get("observedAt") else ""
        lines.append(f"- {md_escape(item.get('text'))}{observed}" + (f": {objects}" if objects else ""))
    return lines


def _others(assessments: Iterable[Mapping[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for assessment in assessments:
        verdict = str(assessment.get("verdict"))
        if verdict not in FAILING:
            counts[verdict] = counts.get(verdict, 0) + 1
    return ", ".join(f"{label(v)} in {counts[v]}" for v in VERDICTS if v in counts)
