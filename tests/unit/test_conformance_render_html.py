"""The HTML report's structure, read with html.parser: every control present with its assessments, the totals,
the filters' labels and values, nothing loaded from outside, and every document string escaped."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

from iotsec.conformance.html import html
from tests.unit.test_conformance_render import XSS, big_document, control, report, xss_document

# Attributes that make a browser fetch something.
LOADING = {"src", "href", "srcset", "action", "formaction", "data", "poster", "background", "cite", "manifest"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: list[str] = field(default_factory=list)


class Page(HTMLParser):
    """Every start tag with its attributes, the text inside <script>/<style>, and all text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.texts: list[str] = []
        self._raw: str | None = None
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, {k: v or "" for k, v in attrs}))
        if tag in ("script", "style"):
            self._raw = tag

    def handle_endtag(self, tag: str) -> None:
        self._raw = None

    def handle_data(self, data: str) -> None:
        if self._raw == "script":
            self.scripts.append(data)
        elif self._raw == "style":
            self.styles.append(data)
        else:
            self.texts.append(data)

    def all(self, tag: str, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.elements
            if e.tag == tag and all(e.attrs.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())
        ]

    @property
    def text(self) -> str:
        return "".join(self.texts)


def test_every_control_is_a_details_element_with_all_its_assessments():
    document = report()
    page = Page(html(document))
    details = page.all("details")
    assert [d.attrs["id"] for d in details] == [c["id"] for c in document["controls"]]
    assert [d.attrs["data-v"] for d in details] == [c["verdict"] for c in document["controls"]]
    rows = [e for e in page.elements if e.tag == "tr" and "data-v" in e.attrs]
    expected = [a for c in document["controls"] for a in c["assessments"]]
    assert len(rows) == len(expected)
    for row, assessment in zip(rows, expected, strict=True):
        assert row.attrs["data-v"] == assessment["verdict"]
        assert row.attrs["data-t"] == (assessment["scope"]["tenant"] or "")
        assert row.attrs["data-d"] == (assessment["scope"]["domain"] or "")
    failing = control(document, "X1369-9.4.3-1")["assessments"][0]
    assert failing["evidence"][0]["text"] in page.text
    assert "Deployment acme-meters/legacy-device-console" in page.text


def test_totals_per_area_and_in_all_are_the_documents():
    document = report()
    page = Page(html(document))
    cells = {e.attrs["data-key"]: e for e in page.elements if "data-key" in e.attrs}
    source = html(document)
    for verdict, count in document["totals"].items():
        assert re.search(rf'data-key="\*\|{verdict}" data-verdict="{verdict}">{count}</td>', source)
    for area in document["areas"]:
        for verdict, count in area["totals"].items():
            assert f'<td class="n" data-key="{area["id"]}|{verdict}" data-verdict="{verdict}">{count}</td>' in source
    assert "*|*" in cells
    assert len(cells) == (len(document["areas"]) + 1) * 6


def test_filters_are_labelled_and_offer_every_tenant_domain_and_verdict():
    document = report()
    page = Page(html(document))
    selects = page.all("select")
    labelled = {e.attrs.get("for") for e in page.all("label")}
    assert {s.attrs["id"] for s in selects} == {"f-tenant", "f-domain", "f-verdict"}
    assert all(s.attrs["id"] in labelled for s in selects)
    assert "f-shared" in labelled
    values = [e.attrs["value"] for e in page.all("option")]
    assert set(document["scopes"]["tenants"]) <= set(values)
    assert set(document["scopes"]["domains"]) <= set(values)
    assert {"not-met", "partial", "met", "not-applicable", "out-of-scope"} <= set(values)
    assert [h.tag for h in page.elements if h.tag in ("h1", "h2")][:1] == ["h1"]
    assert len(page.all("h2")) == len(document["areas"]) + 2  # filters, totals, one per area
    # Verdicts are words, not only colours.
    assert "not met" in page.text
    assert "partial" in page.text


def test_nothing_is_loaded_from_outside_and_only_the_own_inline_code_may_run():
    source = html(report())
    page = Page(source)
    assert not page.all("link")
    assert not page.all("img")
    assert not page.all("iframe")
    assert not page.all("object")
    for element in page.elements:
        for name, value in element.attrs.items():
            if name in LOADING:
                assert value.startswith("#"), (element.tag, name, value)
    assert all("url(" not in s and "@import" not in s for s in page.styles)
    assert all("fetch(" not in s and "XMLHttpRequest" not in s and "innerHTML" not in s for s in page.scripts)
    (meta,) = [m for m in page.all("meta") if m.attrs.get("http-equiv") == "Content-Security-Policy"]
    policy = meta.attrs["content"]
    assert "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    for body in page.scripts + page.styles:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy


def test_strings_from_the_document_are_escaped_everywhere():
    document = xss_document()
    source = html(document)
    page = Page(source)
    assert len(page.all("script")) == 1
    assert len(page.scripts) == 1
    assert not page.all("img")
    assert all(not name.startswith("on") for e in page.elements for name in e.attrs)
    for payload in XSS:
        assert payload not in source
    text = page.text
    assert "evidence " + XSS[0] + XSS[2] in text
    assert f"Deployment {XSS[1]}/{XSS[2]}" in text
    assert XSS[0] + " requirement" in text
    assert XSS[3] in text
    assert XSS[2] in [e.attrs["value"] for e in page.all("option")]
    rows = [e for e in page.elements if e.tag == "tr" and e.attrs.get("data-t") == XSS[2]]
    assert len(rows) == 1
    assert rows[0].attrs["data-d"] == XSS[1]


def test_the_page_is_deterministic():
    assert html(report()) == html(report())


def test_a_thousand_namespaces_render_to_a_few_megabytes():
    document = big_document(1000)
    rows = sum(len(c["assessments"]) for c in document["controls"])
    size = len(html(document).encode())
    print(f"\nHTML report: {rows} assessments over 1000 namespaces -> {size / 1e6:.1f} MB")
    assert size < 20e6


def test_a_limited_view_is_named_in_the_header():
    document = report()
    document["filters"] = {"domain": "ingestion", "namespace": "acme-meters"}
    assert "Limited to" + "domain ingestion, namespace acme-meters" in Page(html(document)).text
    assert "Limited to" not in Page(html(report())).text
