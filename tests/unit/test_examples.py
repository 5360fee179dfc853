"""The examples against the schemas that matter: committed CRD files and upstream Kubernetes."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from iotsec.model.controls import BY_ID
from tests.conftest import EXAMPLES, ROOT, load_examples

CRD_FILES = {
    crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path in sorted((ROOT / "crds").glob("*.yaml"))
    for crd in yaml.safe_load_all(path.read_text())
}
WORKLOADS = sorted((EXAMPLES / "workloads").rglob("*.yaml"))


@pytest.mark.parametrize("doc", load_examples(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_example_validates_against_the_committed_crd_schema(doc):
    jsonschema.Draft7Validator(CRD_FILES[doc["kind"]]).validate(doc)


@pytest.mark.parametrize("path", WORKLOADS, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_workload_is_valid_kubernetes(path: Path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_nonconforming_workloads_declare_what_they_break():
    for path in (EXAMPLES / "workloads/nonconforming").glob("*.yaml"):
        expects = [line for line in path.read_text().splitlines() if line.startswith("# expect: ")]
        assert expects, path
        for line in expects:
            rule, control = line.removeprefix("# expect: ").split()
            assert rule.replace("-", "").isalnum()
            assert control in BY_ID, f"{path.name}: unknown control {control}"
