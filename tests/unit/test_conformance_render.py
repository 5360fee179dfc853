"""The conformance report's terminal summary and Markdown, rendered from a report document (the fixture follows
the document's schema: 81 controls across 9.1-9.6, several domains, tenants and namespaces, every verdict).

The helpers at the top build the documents the HTML and browser tests use too."""

from __future__ import annotations

import copy
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from iotsec.conformance.render import WIDTH, markdown, text

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "conformance_report.json"
ORDER = ("not-met", "partial", "met", "not-applicable", "out-of-scope")

# Attacker-controlled strings: object names, messages and labels come from the cluster.
XSS = (
    "<script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=2">',
    "</script><script>window.__pwned=3</script>",
    "' onmouseover='window.__pwned=4' x='",
)


def report() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


def control(document: dict[str, Any], control_id: str) -> dict[str, Any]:
    return next(c for c in document["controls"] if c["id"] == control_id)


def xss_document() -> dict[str, Any]:
    """The fixture with every cluster-provided string of one failing control (and the filter values, the
    source) replaced by script-injection payloads."""
    document = report()
    target = control(document, "X1369-9.4.3-1")
    target["requirement"] = XSS[0] + " requirement"
    first = target["assessments"][0]
    first["summary"] = XSS[1]
    first["missing"] = XSS[2]
    first["scope"]["name"] = XSS[3]
    first["scope"]["tenant"] = XSS[2]
    first["scope"]["domain"] = XSS[1]
    first["evidence"][0]["text"] = "evidence " + XSS[0] + XSS[2]
    first["evidence"][0]["objects"][0]["name"] = XSS[2]
    first["evidence"][0]["objects"][0]["namespace"] = XSS[1]
    first["evidence"][0]["objects"][0]["apiVersion"] = XSS[3]
    first["evidence"][0]["observedAt"] = XSS[1]
    document["scopes"]["tenants"].append(XSS[2])
    document["source"]["from"] = XSS[0]
    document["source"]["unavailable"][XSS[1]] = XSS[2]
    document["areas"][0]["title"] = XSS[3]
    document["generatedAt"] = XSS[2]
    return document


def big_document(namespaces: int) -> dict[str, Any]:
    """The fixture with every namespace-scoped control assessed in `namespaces` namespaces (10 per tenant)."""
    document = report()
    names = [f"tenant-{i // 10:03d}-ns-{i % 10}" for i in range(namespaces)]
    for entry in document["controls"]:
        per_namespace = [a for a in entry["assessments"] if a["scope"]["kind"] == "namespace"]
        if not per_namespace:
            continue
        others = [a for a in entry["assessments"] if a["scope"]["kind"] != "namespace"]
        generated = []
        for i, name in enumerate(names):
            assessment = copy.deepcopy(per_namespace[i % len(per_namespace)])
            assessment["scope"] = {"kind": "namespace", "name": name, "domain": "ingestion", "tenant": name[:10]}
            generated.append(assessment)
        entry["assessments"] = sorted(others + generated, key=lambda a: ORDER.index(a["verdict"]))
    document["scopes"]["namespaces"] = names
    document["scopes"]["tenants"] = sorted({n[:10] for n in names})
    return document


def visible_totals(document: dict[str, Any], tenant: str = "", domain: str = "") -> Counter[str]:
    """What the HTML's filters should count: per control the worst verdict among the assessments in the selection
    (a tenant/domain filter keeps the assessments of that tenant/domain)."""
    counts: Counter[str] = Counter()
    for entry in document["controls"]:
        kept = [
            a["verdict"]
            for a in entry["assessments"]
            if (not tenant or a["scope"]["tenant"] == tenant) and (not domain or a["scope"]["domain"] == domain)
        ]
        if kept:
            counts[min(kept, key=ORDER.index)] += 1
    return counts


# ---- the fixture itself follows the seams ----


def test_fixture_is_a_realistic_document():
    document = report()
    assert document["apiVersion"] == "iotsec.io/conformance/v1"
    assert document["kind"] == "ConformanceReport"
    assert len(document["controls"]) == document["catalog"]["controls"] == 81
    assert {c["area"] for c in document["controls"]} == {"9.1", "9.2", "9.3", "9.4", "9.5", "9.6"}
    assert set(Counter(c["verdict"] for c in document["controls"])) == set(ORDER)
    assert document["totals"] == dict(Counter(c["verdict"] for c in document["controls"])) | {
        v: 0 for v in ORDER if v not in document["totals"]
    }
    scopes = {a["scope"]["kind"] for c in document["controls"] for a in c["assessments"]}
    assert scopes == {"cluster", "domain", "tenant", "namespace"}
    assert visible_totals(document) == Counter({k: v for k, v in document["totals"].items() if v})


def test_fixture_follows_the_committed_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from iotsec.conformance.document import schema

    jsonschema.validate(report(), schema())


# ---- text ----


def test_text_leads_with_the_totals_and_the_areas():
    document = report()
    lines = text(document).splitlines()
    totals = document["totals"]
    assert lines[2] == (
        f"81 controls: {totals['not-met']} not met, {totals['partial']} partial, {totals['met']} met, "
        f"{totals['not-applicable']} not applicable, {totals['out-of-scope']} out of scope"
    )
    assert "cluster https://127.0.0.1:6443" in lines[0]
    for area in document["areas"]:
        line = next(x for x in lines if x.strip().startswith(f"{area['id']} {area['title']}"))
        assert f"not met {area['totals']['not-met']}  partial {area['totals']['partial']}" in line
    assert any("cannot read aquasecurity.github.io/VulnerabilityReport: CRD not installed" in x for x in lines)


def test_text_lists_not_met_then_partial_controls_with_scopes_and_first_evidence():
    document = report()
    output = text(document)
    heads = re.findall(r"^(NOT MET|PARTIAL|MET)  (X1369-\S+)", output, re.M)
    expected = [c["id"] for v in ("not-met", "partial") for c in document["controls"] if c["verdict"] == v]
    assert [cid for _, cid in heads] == expected
    assert {kind for kind, _ in heads} == {"NOT MET", "PARTIAL"}  # met controls are not listed
    block = output.split("X1369-9.4.3-1", 1)[1].split("\n\n", 1)[0]
    assert "    not met in: namespace acme-meters\n" in block
    assert "partial in: namespace acme-analytics" in block
    assert "    Deployment acme-meters/legacy-device-console: container modbus runs privileged" in block
    assert output.rstrip().splitlines()[-1].startswith("Every control with its evidence: iotsec report -o html")
    assert "-o json" in output.rstrip().splitlines()[-1]


def test_text_fits_120_columns_and_has_colour_only_when_asked():
    document = big_document(300)
    plain = text(document)
    assert "\x1b" not in plain
    assert max(len(line) for line in plain.splitlines()) <= WIDTH
    assert "(+" in plain  # long scope lists are cut with a count
    coloured = text(document, color=True)
    assert "\x1b[1;31mNOT MET\x1b[0m" in coloured
    visible = re.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert visible == plain


def test_text_neutralises_terminal_escapes_from_the_cluster():
    document = report()
    entry = control(document, "X1369-9.4.3-1")
    entry["assessments"][0]["evidence"][0]["text"] = "evil\x1b]0;owned\x07\x1b[2Jname\nsecond line"
    output = text(document, color=True)
    assert "\x1b]" not in output
    assert "\x07" not in output
    assert "\x1b[2J" not in output
    assert "evil ]0;owned  [2Jname second line" in output


def test_text_is_deterministic():
    assert text(report()) == text(report())


# ---- Markdown ----


def _cells(row: str) -> list[str]:
    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def test_markdown_has_title_source_totals_and_a_table_per_area():
    document = report()
    output = markdown(document)
    lines = output.splitlines()
    assert lines[0] == "# X.1369 conformance report"
    assert "- Source: cluster https://127.0.0.1:6443" in lines
    assert "- Generated: 2026-12-03T18:00:00Z" in lines
    for verdict in ORDER:
        assert f"| {verdict.replace('-', ' ')} | {document['totals'][verdict]} |" in lines
    for area in document["areas"]:
        section = output.split(f"\n## {area['id']} {area['title']}\n", 1)[1].split("\n## ", 1)[0]
        rows = [x for x in section.splitlines() if x.startswith("| X1369")]
        assert [_cells(r)[0].replace("\\", "") for r in rows] == [
            c["id"] for c in document["controls"] if c["area"] == area["id"]
        ]
        assert all(len(_cells(r)) == 4 for r in rows)
    row = next(x for x in lines if x.startswith("| X1369\\-9.4.1\\-2 |") or x.startswith("| X1369-9.4.1-2 |"))
    assert _cells(row)[1] == "not met"
    assert _cells(row)[3] == "namespace globex-telematics"


def test_markdown_sections_for_failing_controls_with_evidence_objects():
    output = markdown(report())
    section = output.split("### X1369-9.4.3-1: not met\n", 1)[1].split("\n### ", 1)[0]
    assert "**namespace acme-meters**: not met: 1 workload runs a privileged container" in section
    assert "Missing: Set securityContext.privileged=false" in section
    bullet = next(x for x in section.splitlines() if x.startswith("- Deployment acme-meters/legacy-device-console:"))
    assert "(observed 2026-12-03T17:55:12Z)" in bullet
    assert bullet.endswith(": Deployment acme-meters/legacy-device-console; PolicyReport acme-meters/iotsec-scan")
    assert "Other scopes: met in" in section
    assert "### X1369-9.6.4-4" not in output  # met controls get no section


def test_markdown_escapes_pipes_newlines_and_markup_in_cells():
    document = report()
    entry = control(document, "X1369-9.4.1-2")
    entry["requirement"] = "a | b\nsecond line <script>x</script> [link](http://e) *em* `code`"
    entry["assessments"][0]["scope"]["name"] = "ns|x\ny"
    output = markdown(document)
    row = next(x for x in output.splitlines() if x.startswith("| X1369-9.4.1-2 |"))
    cells = _cells(row)
    assert len(cells) == 4
    assert cells[2] == r"a \| b second line \<script\>x\</script\> \[link\](http://e) \*em\* \`code\`"
    assert cells[3] == r"namespace ns\|x y"
    assert "<script>" not in output


def test_markdown_is_deterministic_and_survives_a_json_round_trip():
    document = report()
    assert markdown(document) == markdown(json.loads(json.dumps(document)))


def test_a_limited_view_says_so_and_a_scope_judged_twice_is_named_once():
    document = report()
    document["filters"] = {"tenant": "acme"}
    entry = control(document, "X1369-9.4.3-1")
    entry["assessments"].insert(1, copy.deepcopy(entry["assessments"][0]))
    output = text(document)
    assert "\nlimited to tenant acme\n" in output
    assert "    not met in: namespace acme-meters\n" in output
    md = markdown(document)
    assert "- Limited to: tenant acme" in md
    row = next(x for x in md.splitlines() if x.startswith("| X1369-9.4.3-1 |"))
    assert _cells(row)[3] == "namespace acme-meters"
