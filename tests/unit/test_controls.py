"""The control catalog in code matches the project's X.1369 summary, row by row."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from iotsec.cli.main import main
from iotsec.model.controls import AREAS, BY_ID, CONTROLS, Coverage, control
from tests.conftest import SHARED

CATALOG = SHARED / "x1369.md"
ROW = re.compile(r"^\| (X1369-\S+) \| (.+?) \| (.+?) \| (.+?) \|$")


def _rows() -> list[tuple[str, str, str, str]]:
    if not CATALOG.is_file():
        pytest.skip(f"{CATALOG} is not beside this checkout: cannot compare the catalog with its source")
    return [m.groups() for line in CATALOG.read_text().splitlines() if (m := ROW.match(line))]


def test_every_control_of_the_summary_is_in_code_with_the_same_text():
    rows = _rows()
    assert [r[0] for r in rows] == [c.id for c in CONTROLS]
    for cid, requirement, k8s_control, how in rows:
        entry = BY_ID[cid]
        assert entry.requirement == requirement
        assert entry.k8s_control == k8s_control
        assert entry.mechanisms == tuple(m.strip() for m in how.split(",") if m.strip() not in ("\u2013", "-"))


def test_ids_are_unique_and_well_formed():
    assert len(BY_ID) == len(CONTROLS) == 81
    assert all(re.fullmatch(r"X1369-9(\.\d+)+-\d+", c.id) for c in CONTROLS)


def test_what_only_records_never_enforces():
    for c in CONTROLS:
        if not c.mechanisms:
            assert c.coverage is Coverage.OUT_OF_SCOPE, c.id
        elif set(c.mechanisms) <= {"AU", "MET"}:
            assert c.coverage in (Coverage.EVIDENCED, Coverage.OUT_OF_SCOPE), c.id


def test_every_enforced_control_names_a_proof_and_misses_nothing():
    enforced = [c for c in CONTROLS if c.coverage is Coverage.ENFORCED]
    assert enforced
    assert [c.id for c in enforced if not c.proofs] == []
    assert [c.id for c in enforced if c.missing] == [], "something missing is partial, not enforced"


def test_every_partial_control_says_in_one_sentence_what_is_missing():
    partial = [c for c in CONTROLS if c.coverage is Coverage.PARTIAL]
    assert partial
    for c in partial:
        assert c.missing.strip(), c.id
    for c in CONTROLS:
        assert "\n" not in c.missing, c.id
        assert ". " not in c.missing, c.id
        assert not c.missing.endswith("."), c.id
        assert len(c.missing) <= 300, c.id


def test_out_of_scope_controls_claim_no_proof():
    assert [c.id for c in CONTROLS if c.coverage is Coverage.OUT_OF_SCOPE and c.proofs] == []


# Over-claims: named by the issue that asked for this audit, and those the audit found beside them.
OVER_CLAIMED = {
    "X1369-9.1.4-1": "anti-DDoS: a rate-limit annotation absorbs no flood",
    "X1369-9.1.4-3": "host vulnerability scanning: configuration is checked, vulnerabilities are Trivy's",
    "X1369-9.3.2-1": "patched in time: pinning an image is not patching it",
    "X1369-9.3.3-1": "middleware kept current: pinning is not updating",
    "X1369-9.1.3.3-1": "suspend on abnormal behaviour: nothing suspends",
    "X1369-9.1.1.1-1": "stable unique user ids: authentication is the identity provider's",
    "X1369-9.2.4-6": "wipe: only a tenant's Shred wipes, cryptographically",
    "X1369-9.1.3.2-1": "cut off over threshold: only an ingress controller that reads the annotation does",
    "X1369-9.4.1-4": "intrusion detection at the boundary: none",
    "X1369-9.5.3-1": "flow control: the annotation's presence is checked, not its effect",
}


@pytest.mark.parametrize("cid", sorted(OVER_CLAIMED))
def test_over_claimed_controls_are_no_longer_enforced(cid):
    entry = control(cid)
    assert entry.coverage is Coverage.PARTIAL, OVER_CLAIMED[cid]
    assert entry.missing


@pytest.mark.parametrize("cid", ["X1369-9.1.4-3", "X1369-9.3.2-1", "X1369-9.3.3-1"])
def test_patching_and_vulnerability_controls_point_at_trivys_reports(cid):
    assert "Trivy" in control(cid).missing


@pytest.mark.parametrize(
    ("cid", "area", "coverage"),
    [
        ("X1369-9.4.1-2", "9.4", Coverage.ENFORCED),
        ("X1369-9.1.1.1-4", "9.1", Coverage.OUT_OF_SCOPE),
        ("X1369-9.6.4-7", "9.6", Coverage.EVIDENCED),
        ("X1369-9.1.4-1", "9.1", Coverage.PARTIAL),
    ],
)
def test_lookup(cid, area, coverage):
    entry = control(cid)
    assert (entry.area, entry.coverage) == (area, coverage)
    assert entry.area_title == AREAS[area]
    assert entry.clause == cid.removeprefix("X1369-").rsplit("-", 1)[0]


def test_unknown_id_is_named():
    with pytest.raises(KeyError, match=r"X1369-9\.9\.9-9"):
        control("X1369-9.9.9-9")


# The counts the README's "How honest is the catalog" section quotes: change both together.
COUNTS = {"enforced": 25, "partial": 29, "evidenced": 14, "out-of-scope": 13}


def test_controls_prints_the_counts_the_catalog_has(capsys):
    assert main(["controls"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    by_coverage = Counter(str(c.coverage) for c in CONTROLS)
    assert last == "81 controls: " + ", ".join(f"{by_coverage[cov]} {cov}" for cov in Coverage)
    assert dict(by_coverage) == COUNTS
    assert last == "81 controls: 25 enforced, 29 partial, 14 evidenced, 13 out-of-scope"


def test_controls_shows_partial_controls_with_what_is_missing_within_120_columns(capsys):
    assert main(["controls", "--coverage", "partial"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        lines[-1]
        == f"{COUNTS['partial']} controls: 0 enforced, {COUNTS['partial']} partial, 0 evidenced, 0 out-of-scope"
    )
    assert all(len(line) <= 120 for line in lines)
    rows = [i for i, line in enumerate(lines) if line.startswith("X1369-")]
    assert len(rows) == COUNTS["partial"]
    for start, end in zip(rows, [*rows[1:], len(lines) - 1], strict=True):
        cid, coverage = lines[start].split()[:2]
        assert coverage == "partial"
        block = lines[start:end]
        missing = next(i for i, line in enumerate(block) if line.lstrip().startswith("missing: "))
        assert all(line.startswith(" " * 33) for line in block[1:]), cid
        shown = " ".join(line.strip() for line in block[missing:]).removeprefix("missing: ")
        assert shown == control(cid).missing


def test_enforced_controls_show_no_missing_line(capsys):
    assert main(["controls", "--coverage", "enforced"]) == 0
    out = capsys.readouterr().out
    assert "missing:" not in out
    assert out.count("\nX1369-") + out.startswith("X1369-") == COUNTS["enforced"]


def test_controls_json_carries_proofs_and_what_is_missing(capsys):
    assert main(["controls", "-o", "json"]) == 0
    rows = {r["id"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 81
    ddos = rows["X1369-9.1.4-1"]
    assert ddos["coverage"] == "partial"
    assert ddos["missing"] == control("X1369-9.1.4-1").missing != ""
    assert ddos["proofs"] == list(control("X1369-9.1.4-1").proofs)
    isolation = rows["X1369-9.4.1-2"]
    assert isolation["coverage"] == "enforced"
    assert isolation["missing"] == ""
    assert (
        "tests/unit/test_securitydomain_builder.py::test_every_member_is_default_deny_both_ways" in isolation["proofs"]
    )
    assert {r["coverage"] for r in rows.values()} == set(COUNTS)
