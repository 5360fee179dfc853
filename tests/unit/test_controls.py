"""The control catalog in code matches the project's X.1369 summary, row by row."""

from __future__ import annotations

import re

import pytest

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


def test_coverage_follows_the_mechanisms():
    for c in CONTROLS:
        if not c.mechanisms:
            assert c.coverage is Coverage.OUT_OF_SCOPE, c.id
        elif set(c.mechanisms) <= {"AU", "MET"}:
            assert c.coverage is Coverage.EVIDENCED, c.id
        else:
            assert c.coverage is Coverage.ENFORCED, c.id


@pytest.mark.parametrize(
    ("cid", "area", "coverage"),
    [
        ("X1369-9.4.1-2", "9.4", Coverage.ENFORCED),
        ("X1369-9.1.1.1-4", "9.1", Coverage.OUT_OF_SCOPE),
        ("X1369-9.6.4-7", "9.6", Coverage.EVIDENCED),
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
