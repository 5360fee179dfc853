"""The conformance report as one self-contained HTML file an auditor opens offline.

Rendered from the report document alone. Everything is in the file: the CSS and the script are inline and
allowed by their hashes in a Content-Security-Policy that allows nothing else (no network, no images, no
fonts), so even a name the escaping missed could not run a script. Every string from the document is escaped;
the script reads only `data-` attributes and writes only text, never markup.

The page works without the script (every control and its evidence is in the markup, <details> expand by
themselves); the script adds the filters by tenant, domain and verdict and keeps the totals equal to what is
shown.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from html import escape
from typing import Any

from iotsec.conformance.render import (
    VERDICTS,
    Document,
    assessments_of,
    controls_of,
    label,
    limited_to,
    object_title,
    scope_title,
    source_line,
    totals_of,
    unavailable_of,
)

_STYLE = """
:root{--nm:#b3261e;--pa:#8a5a00;--me:#1e6b34;--na:#5f6368;--os:#5f6368;font:15px/1.45 system-ui,sans-serif;
color:#1b1b1b;background:#fff}
body{max-width:78rem;margin:0 auto;padding:1rem 1.5rem}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin:1.6rem 0 .5rem}
dl.meta{display:grid;grid-template-columns:max-content auto;gap:.1rem 1rem;margin:.5rem 0}
dl.meta dt{font-weight:600}dl.meta dd{margin:0}
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;
vertical-align:top}thead th{background:#f2f2f2}td.n{text-align:right;font-variant-numeric:tabular-nums}
.v{display:inline-block;min-width:6.5em;padding:0 .4em;border-radius:.3em;border:1px solid;font-weight:600;
text-align:center;white-space:nowrap}
.v-not-met{color:var(--nm)}.v-partial{color:var(--pa)}.v-met{color:var(--me)}.v-not-applicable{color:var(--na)}
.v-out-of-scope{color:var(--os);font-weight:400}
form{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center}form label{margin:0 .4rem}
details.c{border:1px solid #ddd;border-radius:.3rem;margin:.3rem 0}
details.c>summary{cursor:pointer;padding:.35rem .5rem}details.c[open]>summary{background:#f7f7f7}
details.c>div{padding:.3rem .6rem .6rem}code{font-size:.92em}
.missing{margin:.2rem 0;color:#333}.missing::before{content:"Missing: ";font-weight:600}
ul.ev{margin:0;padding-left:1.1rem}ul.ob{margin:.1rem 0;padding-left:1rem;list-style:square}
.mech{color:#555;font-size:.9em}table.a td:nth-child(1){width:13%}table.a td:nth-child(2){width:9%}
table.a td:nth-child(3){width:32%}
@media print{#filters{display:none}details.c{break-inside:avoid-page}}
"""

_SCRIPT = """
(function () {
  "use strict";
  var ORDER = ["not-met", "partial", "met", "not-applicable", "out-of-scope"];
  var $ = function (id) { return document.getElementById(id); };
  var tenant = $("f-tenant"), domain = $("f-domain"), verdict = $("f-verdict"), shared = $("f-shared");
  var areas = [].slice.call(document.querySelectorAll("section.area"));
  var controls = [].slice.call(document.querySelectorAll("details.c")).map(function (el) {
    return {el: el, area: el.getAttribute("data-area"), badge: el.querySelector("summary .v"),
            none: el.querySelector("p.none"),
            rows: [].slice.call(el.querySelectorAll("tr[data-v]")).map(function (tr) {
              return {el: tr, v: ORDER.indexOf(tr.getAttribute("data-v")),
                      t: tr.getAttribute("data-t"), d: tr.getAttribute("data-d")};
            })};
  });
  function matches(value, wanted) {
    return wanted === "" || value === wanted || (value === "" && shared.checked);
  }
  function setVerdict(badge, index) {
    var v = ORDER[index];
    badge.className = "v v-" + v;
    badge.textContent = v.replace(/-/g, " ");
  }
  function apply() {
    var t = tenant.value, d = domain.value, only = verdict.value, shown = 0;
    var counts = {};
    controls.forEach(function (c) {
      var best = ORDER.length;
      c.rows.forEach(function (r) {
        var ok = matches(r.t, t) && matches(r.d, d);
        r.el.hidden = !ok;
        if (ok && r.v >= 0 && r.v < best) { best = r.v; }
      });
      if (c.rows.length === 0) { best = ORDER.indexOf(c.el.getAttribute("data-v")); }  // nothing to filter on
      var inSelection = best >= 0 && best < ORDER.length;
      if (inSelection) {
        setVerdict(c.badge, best);
        var key = c.area + "|" + ORDER[best];
        counts[key] = (counts[key] || 0) + 1;
        counts["*|" + ORDER[best]] = (counts["*|" + ORDER[best]] || 0) + 1;
        counts[c.area + "|*"] = (counts[c.area + "|*"] || 0) + 1;
        counts["*|*"] = (counts["*|*"] || 0) + 1;
      }
      c.el.hidden = !inSelection || (only !== "" && ORDER[best] !== only);
      if (!c.el.hidden) { shown += 1; }
    });
    [].slice.call(document.querySelectorAll("#totals td[data-key]")).forEach(function (td) {
      td.textContent = String(counts[td.getAttribute("data-key")] || 0);
    });
    areas.forEach(function (s) {
      s.hidden = !s.querySelector("details.c:not([hidden])");
    });
    $("shown").textContent = "Showing " + shown + " of " + controls.length + " controls.";
  }
  function expand(open) {
    controls.forEach(function (c) { if (!c.el.hidden) { c.el.open = open; } });
  }
  [tenant, domain, verdict, shared].forEach(function (el) { el.addEventListener("change", apply); });
  $("expand").addEventListener("click", function () { expand(true); });
  $("collapse").addEventListener("click", function () { expand(false); });
  window.addEventListener("beforeprint", function () { expand(true); });  // a printed report shows its evidence
  $("filters").hidden = false;
  apply();
})();
"""


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Only this file's own style and script, by hash; nothing may be loaded, submitted or framed.
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {_csp_hash(_STYLE)}; script-src {_csp_hash(_SCRIPT)}; "
    "img-src 'none'; font-src 'none'; connect-src 'none'; base-uri 'none'; form-action 'none'"
)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _e(value: Any) -> str:
    """Escaped for HTML, with control characters from the cluster (ESC, CR, ...) made spaces: harmless in a browser,
    but not when someone `cat`s the file in a terminal."""
    return escape(_CONTROL_CHARACTERS.sub(" ", str(value if value is not None else "")), quote=True)


def html(document: Document) -> str:
    """One self-contained HTML page: header, filters, totals per area, each control a <details> with its
    assessments and evidence."""
    catalog = document.get("catalog") or {}
    title = f"X.1369 conformance report, {_e(document.get('generatedAt'))}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CONTENT_SECURITY_POLICY)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{title}</title>",
        f"<style>{_STYLE}</style>",
        "</head><body>",
        "<header><h1>X.1369 conformance report</h1>",
        '<dl class="meta">',
        f"<dt>Standard</dt><dd>{_e(catalog.get('standard'))}, {_e(catalog.get('controls'))} controls</dd>",
        f"<dt>Source</dt><dd>{_e(source_line(document))}</dd>",
        f'<dt>Generated</dt><dd><time datetime="{_e(document.get("generatedAt"))}">'
        f"{_e(document.get('generatedAt'))}</time></dd>",
        f"<dt>Schema</dt><dd>{_e(document.get('apiVersion'))}</dd>",
        f"<dt>Limited to</dt><dd>{_e(limited_to(document))}</dd>" if limited_to(document) else "",
        *(f"<dt>Not readable</dt><dd>{_e(kind)}: {_e(why)}</dd>" for kind, why in unavailable_of(document)),
        "</dl></header><main>",
        _filters(document),
        _totals(document),
        *(_area(document, area) for area in document.get("areas") or []),
        "</main>",
        f"<script>{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _filter_values(document: Document, key: str, field: str) -> list[str]:
    """The document's declared scopes plus every value its assessments name, so no assessment is unreachable."""
    declared = (document.get("scopes") or {}).get(key) or []
    values = {str(v.get("name") if isinstance(v, Mapping) else v) for v in declared}
    for control in controls_of(document):
        for assessment in assessments_of(control):
            value = (assessment.get("scope") or {}).get(field)
            if value:
                values.add(str(value))
    return sorted(v for v in values if v)


def _select(ident: str, text: str, everything: str, values: list[tuple[str, str]]) -> str:
    options = "".join(f'<option value="{_e(value)}">{_e(shown)}</option>' for value, shown in values)
    return (
        f'<label for="{ident}">{text}</label>'
        f'<select id="{ident}"><option value="">{everything}</option>{options}</select>'
    )


def _filters(document: Document) -> str:
    tenants = [(t, t) for t in _filter_values(document, "tenants", "tenant")]
    domains = [(d, d) for d in _filter_values(document, "domains", "domain")]
    verdicts = [(v, label(v)) for v in VERDICTS]
    return "".join(
        [
            # Hidden until the script runs: without it the filters would do nothing.
            '<section id="filters" aria-labelledby="h-filters" hidden><h2 id="h-filters">Filters</h2><form>',
            f"<div>{_select('f-tenant', 'Tenant', 'all tenants', tenants)}</div>",
            f"<div>{_select('f-domain', 'Security domain', 'all domains', domains)}</div>",
            f"<div>{_select('f-verdict', 'Verdict', 'any verdict', verdicts)}</div>",
            '<div><input type="checkbox" id="f-shared">',
            '<label for="f-shared">with platform-wide assessments (no tenant or domain)</label></div>',
            '<div><button type="button" id="expand">Expand all</button> ',
            '<button type="button" id="collapse">Collapse all</button></div>',
            '</form><p id="shown" aria-live="polite"></p></section>',
        ]
    )


def _totals(document: Document) -> str:
    """Controls per verdict, per area and in all; the cells carry the key the script recounts them under."""
    head = "".join(f'<th scope="col">{label(v)}</th>' for v in VERDICTS)
    rows = []
    for area in document.get("areas") or []:
        counts = area.get("totals") or {}
        name = f"{_e(area.get('id'))} {_e(area.get('title'))}"
        rows.append(
            f'<tr><th scope="row"><a href="#area-{_e(area.get("id"))}">{name}</a></th>'
            + _count_cells(str(area.get("id")), counts, sum(int(counts.get(v, 0)) for v in VERDICTS))
            + "</tr>"
        )
    total = _count_cells("*", totals_of(document), len(controls_of(document)))
    return (
        '<section aria-labelledby="h-totals"><h2 id="h-totals">Totals</h2>'
        '<table id="totals"><caption>Controls per verdict (a control counts once, with its worst verdict '
        "in the selection)</caption>"
        f'<thead><tr><th scope="col">Area</th>{head}<th scope="col">controls</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody>"
        f'<tfoot><tr id="totals-all"><th scope="row">All areas</th>{total}</tr></tfoot></table></section>'
    )


def _count_cells(area: str, counts: Mapping[str, Any], controls: int) -> str:
    cells = [
        f'<td class="n" data-key="{_e(area)}|{v}" data-verdict="{v}">{int(counts.get(v, 0))}</td>' for v in VERDICTS
    ]
    return "".join(cells) + f'<td class="n" data-key="{_e(area)}|*">{controls}</td>'


def _area(document: Document, area: Mapping[str, Any]) -> str:
    ident = _e(area.get("id"))
    controls = [c for c in controls_of(document) if c.get("area") == area.get("id")]
    return (
        f'<section class="area" id="area-{ident}" aria-labelledby="h-{ident}">'
        f'<h2 id="h-{ident}">{ident} {_e(area.get("title"))}</h2>'
        + "".join(_control(c) for c in controls)
        + "</section>"
    )


def _badge(verdict: str) -> str:
    return f'<span class="v v-{_e(verdict)}">{_e(label(verdict))}</span>'


def _control(control: Mapping[str, Any]) -> str:
    ident = _e(control.get("id"))
    mechanisms = ", ".join(str(m) for m in control.get("mechanisms") or [])
    rows = "".join(_assessment(a) for a in assessments_of(control))
    return (
        f'<details class="c" id="{ident}" data-area="{_e(control.get("area"))}" data-v="{_e(control.get("verdict"))}">'
        f"<summary>{_badge(str(control.get('verdict')))} <code>{ident}</code> {_e(control.get('requirement'))}"
        "</summary><div>"
        f'<p class="mech">How: {_e(control.get("k8sControl"))} (coverage {_e(control.get("coverage"))}'
        + (f"; {_e(mechanisms)}" if mechanisms else "")
        + ")</p>"
        '<table class="a"><thead><tr><th scope="col">Scope</th><th scope="col">Verdict</th><th scope="col">Finding</th>'
        f'<th scope="col">Evidence</th></tr></thead><tbody>{rows}</tbody></table></div></details>'
    )


def _assessment(assessment: Mapping[str, Any]) -> str:
    scope = assessment.get("scope") or {}
    verdict = str(assessment.get("verdict"))
    missing = f'<p class="missing">{_e(assessment["missing"])}</p>' if assessment.get("missing") else ""
    mechanism = (
        f'<div class="mech">Read from: {_e(assessment["mechanism"])}</div>' if assessment.get("mechanism") else ""
    )
    evidence = "".join(_evidence(e) for e in assessment.get("evidence") or [])
    return (
        f'<tr data-v="{_e(verdict)}" data-t="{_e(scope.get("tenant") or "")}" data-d="{_e(scope.get("domain") or "")}">'
        f"<td>{_e(scope_title(scope))}</td><td>{_badge(verdict)}</td>"
        f"<td>{_e(assessment.get('summary'))}{missing}{mechanism}</td>"
        f"<td>{'<ul class=ev>' + evidence + '</ul>' if evidence else ''}</td></tr>"
    )


def _evidence(evidence: Mapping[str, Any]) -> str:
    observed = evidence.get("observedAt")
    when = f' <time datetime="{_e(observed)}">({_e(observed)})</time>' if observed else ""
    objects = "".join(
        f'<li><code title="{_e(o.get("apiVersion"))}">{_e(object_title(o))}</code></li>'
        for o in evidence.get("objects") or []
    )
    return f"<li>{_e(evidence.get('text'))}{when}" + (f'<ul class="ob">{objects}</ul>' if objects else "") + "</li>"
