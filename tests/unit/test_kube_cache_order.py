"""The watch cache holds the newest copy it was given (issue 18): the answer to one of iotsec's writes arrives
before the watch events of the writes before it, and those must not put an older copy back (a domain then saw its
labels missing from a namespace it had just labelled, and labelled it again)."""

from __future__ import annotations

from collections.abc import Callable

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
    """An API server whose list answers `items` at resourceVersion `version`; `meanwhile` runs while the list is
    on its way (after it was read, before its answer reaches the reflector)."""

    def __init__(self, items: list[dict], version: str, meanwhile: Callable[[], None] = lambda: None) -> None:
        self.items, self.version, self.meanwhile = items, version, meanwhile

    def list_at(self, api_version: str, kind: str) -> tuple[list[dict], str]:
        self.meanwhile()
        return [dict(item, metadata=dict(item["metadata"])) for item in self.items], self.version


def _named(name: str, version: str, labels: dict[str, str] | None = None) -> dict:
    namespace = _namespace(version, labels or {})
    namespace["metadata"]["name"] = name
    return namespace


def _listing(listed: list[dict], version: str, before: list[dict] = (), meanwhile: list[tuple[str, dict]] = ()):
    """A reflector that holds `before`, then lists `listed` at `version` while `meanwhile` events arrive."""
    reflector = Reflector(None, "v1", "Namespace", lambda: None)  # type: ignore[arg-type]
    for obj in before:
        reflector._apply("MODIFIED", obj)
    reflector.kube = _Listing(listed, version, lambda: [reflector._apply(t, o) for t, o in meanwhile])
    reflector._list()
    return reflector


def _labels(reflector: Reflector) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o["metadata"]["labels"] for o in reflector.items()}


def test_a_list_does_not_put_back_what_the_operator_wrote_while_it_was_on_its_way():
    # the list was read at revision 15; the answers to our label patch (revision 20) and to our create of "b"
    # (revision 18) reached the cache before the list's answer did
    written = [("MODIFIED", _named("a", "20", {"iotsec.io/domain": "d"})), ("MODIFIED", _named("b", "18"))]
    reflector = _listing([_named("a", "10", {})], "15", before=[_named("a", "10", {})], meanwhile=written)
    assert _labels(reflector) == {"a": {"iotsec.io/domain": "d"}, "b": {}}


def test_a_list_still_removes_what_was_deleted_and_replaces_what_changed_before_it():
    reflector = _listing([_named("a", "14", {"new": "y"})], "15", before=[_named("gone", "12"), _named("a", "5")])
    assert _labels(reflector) == {"a": {"new": "y"}}, "a copy from before the list's revision yields to the list"


def test_what_the_store_held_before_the_list_was_asked_for_yields_to_it_whatever_its_version():
    # after an etcd restore without a revision bump, versions start over lower: the list must still win
    reflector = _listing([_named("a", "30", {"restored": "yes"})], "40", before=[_named("a", "5000", {"old": "x"})])
    assert _labels(reflector) == {"a": {"restored": "yes"}}


def test_a_list_at_an_opaque_version_is_taken_whole():
    reflector = _listing(
        [_named("a", "10", {})], "not-a-counter", meanwhile=[("MODIFIED", _named("a", "20", {"x": "1"}))]
    )
    assert _labels(reflector) == {"a": {}}


def test_a_copy_from_before_a_deletion_does_not_bring_the_object_back():
    reflector = _reflector()
    reflector._apply("ADDED", _named("a", "10", {"zone": "core"}))
    reflector._apply("DELETED", _named("a", "12", {"zone": "core"}))  # the watch: deleted at revision 12
    reflector._apply("MODIFIED", _named("a", "10", {"zone": "core"}))  # a kopf event's body, observed late
    assert reflector.get("", "a") is None
    reflector._apply("ADDED", _named("a", "15", {"zone": "edge"}))  # made again under the same name
    assert reflector.get("", "a")["metadata"]["labels"] == {"zone": "edge"}


def test_a_late_copy_does_not_bring_back_what_a_relist_no_longer_holds():
    """The watch was down while the namespace was deleted (no DELETED event, and kopf's relist sends none either);
    the list no longer holds it, and a kopf event's body from before, handled late, must not put it back."""
    reflector = _listing([], "20", before=[_named("n", "12")])
    reflector._apply("MODIFIED", _named("n", "12"))
    assert reflector.items() == []
    reflector._apply("ADDED", _named("n", "25"))  # made again after the list
    assert [o["metadata"]["resourceVersion"] for o in reflector.items()] == ["25"]


def test_a_deletion_is_remembered_only_for_a_while(monkeypatch):
    """After an etcd restore, an object made again under the same name may carry a lower version than the one it
    was deleted at: it is refused only for DELETION_MEMORY_SECONDS."""
    from iotsec.k8s import cache

    clock = [1000.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: clock[0])
    reflector = _reflector()
    reflector._apply("DELETED", _named("a", "5000"))
    reflector._apply("ADDED", _named("a", "30"))
    assert reflector.get("", "a") is None
    clock[0] += cache.DELETION_MEMORY_SECONDS + 1
    reflector._apply("ADDED", _named("a", "30"))
    assert reflector.get("", "a") is not None


def test_only_the_latest_deletions_are_remembered(monkeypatch):
    from iotsec.k8s import cache

    monkeypatch.setattr(cache, "MAX_DELETIONS", 2)
    reflector = _reflector()
    for index, name in enumerate(("a", "b", "c")):
        reflector._apply("DELETED", _named(name, str(10 + index)))
    for name in ("a", "b", "c"):
        reflector._apply("MODIFIED", _named(name, "1"))
    assert sorted(o["metadata"]["name"] for o in reflector.items()) == ["a"], "the oldest deletion was forgotten"
