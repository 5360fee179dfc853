"""The label index a domain analysis narrows selectors with (issue 18) never changes what a selector claims."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from iotsec.api.common import LabelSelector
from iotsec.build import securitydomain as builder
from iotsec.model import selectors

KEYS = ["tier", "iotsec.io/domain-claim", "team", "kubernetes.io/metadata.name"]
VALUES = ["a", "b", "c"]

label_sets = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=4)
namespace_sets = st.dictionaries(st.sampled_from([f"ns-{i}" for i in range(12)]), label_sets, max_size=12)
requirements = st.one_of(
    st.builds(
        lambda key, operator, values: {"key": key, "operator": operator, "values": values},
        st.sampled_from(KEYS),
        st.sampled_from(["In", "NotIn"]),
        st.lists(st.sampled_from(VALUES), min_size=1, max_size=3),
    ),
    st.builds(
        lambda key, operator: {"key": key, "operator": operator},
        st.sampled_from(KEYS),
        st.sampled_from(["Exists", "DoesNotExist"]),
    ),
)
selector_docs = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(st.sampled_from(KEYS), st.sampled_from(VALUES), max_size=3),
        "matchExpressions": st.lists(requirements, max_size=3),
    },
)


@settings(max_examples=400, deadline=None)
@given(namespaces=namespace_sets, selector_doc=selector_docs)
def test_the_index_narrows_a_selector_to_a_superset_of_what_it_matches(namespaces, selector_doc):
    selector = LabelSelector.model_validate(selector_doc)
    matched = {name for name, labels in namespaces.items() if selectors.matches(selector, labels)}
    candidates = selectors.LabelIndex(namespaces).candidates(selector)
    assert candidates is None or matched <= candidates


@settings(max_examples=200, deadline=None)
@given(namespaces=namespace_sets, selector_docs_=st.lists(selector_docs, min_size=1, max_size=4))
def test_domains_claim_the_same_namespaces_with_and_without_the_index(namespaces, selector_docs_):
    infos = {name: builder.NamespaceInfo(name, labels) for name, labels in namespaces.items()}
    index = selectors.LabelIndex(namespaces)
    for number, doc in enumerate(selector_docs_):
        domain = _domain(f"d{number}", doc)
        assert builder.claimed_namespaces(domain, infos, index) == builder.claimed_namespaces(domain, infos)


def _domain(name: str, selector_doc: dict[str, Any]) -> builder.Domain:
    from iotsec.api.securitydomain import SecurityDomainSpec

    spec = SecurityDomainSpec.model_validate(
        {"zone": "core", "namespaces": ["ns-1"], "namespaceSelector": selector_doc}
    )
    return builder.Domain(name, spec, "2026-01-01T00:00:00Z")
