"""The watch cache holds the newest copy it was given (issue 18): the answer to one of iotsec's writes arrives
before the watch events of the writes before it, and those must not put an older copy back (a domain then saw its
labels missing from a namespace it had just labelled, and labelled it again)."""

from __future__ import annotations

from iotsec.k8s.cache import Reflector


def _namespace(version: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "a", "resourceVersion": version, "labels": labels},
    }


def _reflector() -> Reflector:
    return Reflector(object(), "v1", "Namespace", lambda: None)  # type: ignore[arg-type]


def test_an_earlier_version_does_not_replace_a_later_one():
    reflector = _reflector()
    reflector._apply("MODIFIED", _namespace("20", {"iotsec.io/domain": "d"}))  # the answer to our label patch
    reflector._apply("MODIFIED", _namespace("19", {}))  # the watch event of the write before it
    assert reflector.get("", "a")["metadata"]["labels"] == {"iotsec.io/domain": "d"}
    reflector._apply("MODIFIED", _namespace("21", {}))
    assert reflector.get("", "a")["metadata"]["labels"] == {}


def test_a_deletion_is_taken_whatever_its_version():
    reflector = _reflector()
    reflector._apply("MODIFIED", _namespace("20", {}))
    reflector._apply("DELETED", _namespace("3", {}))
    assert reflector.get("", "a") is None


def test_versions_that_are_not_counters_are_taken_as_newer():
    reflector = _reflector()
    reflector._apply("MODIFIED", _namespace("b", {"x": "1"}))
    reflector._apply("MODIFIED", _namespace("a", {"x": "2"}))
    assert reflector.get("", "a")["metadata"]["labels"] == {"x": "2"}


def test_the_cache_keeps_no_managed_fields():
    reflector = _reflector()
    namespace = _namespace("5", {})
    namespace["metadata"]["managedFields"] = [{"manager": "iotsec", "operation": "Apply", "fieldsV1": {}}]
    reflector._apply("ADDED", namespace)
    assert "managedFields" not in reflector.get("", "a")["metadata"]


def _owned(name: str, owner: str, version: str = "1") -> dict:
    labels = {"app.kubernetes.io/managed-by": "iotsec", "iotsec.io/owner-name": owner}
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "resourceVersion": version, "labels": labels},
    }


def test_lists_of_one_owners_objects_follow_relabels_and_deletions():
    from iotsec.model import selectors

    reflector = _reflector()
    for name, owner in (("a", "t1"), ("b", "t1"), ("c", "t2")):
        reflector._apply("ADDED", _owned(name, owner))
    t1 = selectors.parse_selector("iotsec.io/owner-name=t1") or []
    assert sorted(o["metadata"]["name"] for o in reflector.candidates(t1) or []) == ["a", "b"]
    reflector._apply("MODIFIED", _owned("b", "t2", "2"))
    reflector._apply("DELETED", _owned("a", "t1", "3"))
    assert reflector.candidates(t1) == []
    t2 = selectors.parse_selector("iotsec.io/owner-name=t2") or []
    assert sorted(o["metadata"]["name"] for o in reflector.candidates(t2) or []) == ["b", "c"]
    assert reflector.candidates(selectors.parse_selector("app.kubernetes.io/managed-by=iotsec") or []) is None


class _Listing:
    """An API server whose list answers `items` at resourceVersion `version`."""

    def __init__(self, items: list[dict], version: str) -> None:
        self.items, self.version = items, version

    def list_at(self, api_version: str, kind: str) -> tuple[list[dict], str]:
        return [dict(item, metadata=dict(item["metadata"])) for item in self.items], self.version


def _named(name: str, version: str, labels: dict[str, str] | None = None) -> dict:
    namespace = _namespace(version, labels or {})
    namespace["metadata"]["name"] = name
    return namespace


def _labels_after_list(held: list[dict], listed: list[dict], version: str) -> dict[str, dict[str, str]]:
    reflector = Reflector(_Listing(listed, version), "v1", "Namespace", lambda: None)  # type: ignore[arg-type]
    for obj in held:
        reflector._apply("MODIFIED", obj)
    reflector._list()
    return {o["metadata"]["name"]: o["metadata"]["labels"] for o in reflector.items()}


def test_a_list_does_not_put_back_what_the_operator_wrote_after_the_list_was_read():
    # the list was read at revision 15; the answer to our label patch (revision 20) and to our create of "b"
    # (revision 18) reached the cache while the list was on its way
    held = [_named("a", "20", {"iotsec.io/domain": "d"}), _named("b", "18")]
    after = _labels_after_list(held, [_named("a", "10", {})], "15")
    assert after == {"a": {"iotsec.io/domain": "d"}, "b": {}}


def test_a_list_still_removes_what_was_deleted_and_replaces_what_changed_before_it():
    held = [_named("gone", "12"), _named("a", "5", {"old": "x"})]
    after = _labels_after_list(held, [_named("a", "14", {"new": "y"})], "15")
    assert after == {"a": {"new": "y"}}, "a copy from before the list's revision yields to the list"


def test_a_list_at_an_opaque_version_is_taken_whole():
    after = _labels_after_list([_named("a", "20", {"x": "1"})], [_named("a", "10", {})], "not-a-counter")
    assert after == {"a": {}}


def test_a_copy_from_before_a_deletion_does_not_bring_the_object_back():
    reflector = _reflector()
    reflector._apply("ADDED", _named("a", "10", {"zone": "core"}))
    reflector._apply("DELETED", _named("a", "12", {"zone": "core"}))  # the watch: deleted at revision 12
    reflector._apply("MODIFIED", _named("a", "10", {"zone": "core"}))  # a kopf event's body, observed late
    assert reflector.get("", "a") is None
    reflector._apply("ADDED", _named("a", "15", {"zone": "edge"}))  # made again under the same name
    assert reflector.get("", "a")["metadata"]["labels"] == {"zone": "edge"}


def test_a_list_read_before_a_deletion_does_not_bring_the_object_back():
    reflector = Reflector(_Listing([_named("a", "10")], "11"), "v1", "Namespace", lambda: None)  # type: ignore[arg-type]
    reflector._apply("DELETED", _named("a", "12"))  # the watch reported the deletion before the list's answer landed
    reflector._list()
    assert reflector.items() == []
    reflector.kube = _Listing([], "20")  # type: ignore[assignment]
    reflector._list()
    reflector._apply("MODIFIED", _named("a", "10"))
    assert reflector.items() == [], "the deletion is remembered past later lists"


def test_only_the_latest_deletions_are_remembered(monkeypatch):
    from iotsec.k8s import cache

    monkeypatch.setattr(cache, "MAX_DELETIONS", 2)
    reflector = _reflector()
    for index, name in enumerate(("a", "b", "c")):
        reflector._apply("DELETED", _named(name, str(10 + index)))
    for name in ("a", "b", "c"):
        reflector._apply("MODIFIED", _named(name, "1"))
    assert sorted(o["metadata"]["name"] for o in reflector.items()) == ["a"], "the oldest deletion was forgotten"
