"""Informer-style caches: one kind's objects kept current from a list, then a watch.

A `Reflector` lists a kind once, then follows its watch from the list's resourceVersion; the Kubernetes client
resumes a stream the server ends from the last version it saw. When that version is too old (410 Gone) or the
stream breaks, it lists again and replaces its store, so a missed event cannot outlive the next list; only what
changed while the list was on its way (iotsec's own writes, `observe`) is kept over it. A deletion (reported by the
watch, or an object the list no longer holds) is remembered for a minute, so a late copy from before it cannot
bring the object back. Its store is never emptied by a failure: readers keep the last state they were given.

An object that leaves the store other than by iotsec's own hand (a watch event deleted it, or a list after a watch
gap no longer holds it) is reported to `on_gone` with the store's last copy: someone deleted an object iotsec
manages, and its owner can put it back now rather than at its resync.
"""

from __future__ import annotations

import copy
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from iotsec.k8s.kube import ApiError, Kube
from iotsec.model import selectors
from iotsec.model.labels import OWNER_NAME

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace or "", name)
# A deletion (reported by the watch, or an object a list no longer holds) is remembered this long, and at most this
# many, so that a copy from before it cannot bring the object back: a kopf event's body handed to `observe` late.
# Only briefly: after an etcd restore, versions start over lower, and an object made again under the same name
# must not be refused for long.
DELETION_MEMORY_SECONDS = 60.0
MAX_DELETIONS = 16384


def _key(obj: dict) -> Key:
    meta = obj.get("metadata") or {}
    return meta.get("namespace") or "", meta.get("name") or ""


def _slim(obj: dict) -> dict:
    """The object without metadata.managedFields: nothing iotsec decides reads them, and they were the larger part
    of the memory a cache of 30,000 managed objects took (1,000 tenants, issue 18)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def _version(obj: dict) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _counter(obj: dict) -> int | None:
    """The object's resourceVersion as a number. Resource versions are opaque to clients, but every server iotsec
    runs against counts them up (etcd's revision); None for anything else, which is never taken as older."""
    version = _version(obj)
    return int(version) if version.isdigit() else None


def _older(obj: dict, than: dict | None) -> bool:
    """Whether `obj` is an earlier version of `than`."""
    mine, theirs = _counter(obj), None if than is None else _counter(than)
    return mine is not None and theirs is not None and mine < theirs


def _another(obj: dict, held: dict | None) -> bool:
    """Whether `obj` is another incarnation (uid) of the object `held` is: iotsec deleted it and made it again."""
    mine = (obj.get("metadata") or {}).get("uid")
    theirs = None if held is None else (held.get("metadata") or {}).get("uid")
    return bool(mine and theirs and mine != theirs)


def _keep_in_time_order(memory: dict[Key, Any], key: Key, entry: Any, now: float, when: Callable[[Any], float]) -> None:
    """Put `entry` last in `memory`, which stays in the order of time (`when` reads an entry's), and forget from the
    front, two at a time, what is older than DELETION_MEMORY_SECONDS or past MAX_DELETIONS."""
    memory.pop(key, None)
    memory[key] = entry
    for oldest in list(itertools.islice(memory, 2)):
        if len(memory) > MAX_DELETIONS or when(memory[oldest]) < now - DELETION_MEMORY_SECONDS:
            del memory[oldest]


def _recent(stamp: float) -> bool:
    return stamp >= time.monotonic() - DELETION_MEMORY_SECONDS


def _at_or_before(obj: dict, version: int) -> bool:
    mine = _counter(obj)
    return mine is not None and mine <= version


class Reflector:
    """One kind's objects (those `label_selector` selects), cluster-wide, current to the last watch event;
    `on_change` is called (from the reflector's thread) after each list and each event, `on_gone` with the last
    copy of each object a watch event or a relist removed (not one `forget` removed: iotsec's own deletions)."""

    def __init__(
        self,
        kube: Kube,
        api_version: str,
        kind: str,
        on_change: Callable[[], None],
        retry_seconds: float = 2.0,
        watch_seconds: int = 300,
        label_selector: str | None = None,
        on_gone: Callable[[list[dict]], None] = lambda gone: None,
    ):
        self.kube, self.api_version, self.kind = kube, api_version, kind
        self.on_gone = on_gone
        self.label_selector = label_selector
        self.requirements = selectors.parse_selector(label_selector or "") or []
        self.on_change, self.retry_seconds, self.watch_seconds = on_change, retry_seconds, watch_seconds
        self.synced = threading.Event()
        self.lists = 0
        self.changes = 0  # counts the lists and events that changed an object's version: equal counts, same objects
        self._objects: dict[Key, dict] = {}
        self._taken = 0  # counts the copies the store took (events, observed writes)
        self._applied: dict[Key, int] = {}  # key -> the count at which the copy the store holds came
        self._gone: dict[Key, tuple[int, float]] = {}  # key -> (version, monotonic time) of a recent deletion
        self._deleting: dict[Key, float] = {}  # key -> when iotsec asked for its deletion (its event is not news)
        # objects by their owner-name label: prune lists one owner's children of a kind on every reconcile, and a
        # scan of all 30,000 managed objects each time made 1,000 tenants' resyncs quadratic (issue 18)
        self._by_owner: dict[str, set[Key]] = {}
        self._lock = threading.Lock()

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def candidates(self, requirements: list[selectors.Requirement]) -> list[dict] | None:
        """The objects that may match `requirements` when one names owners (from the index), else None."""
        owners = next((values for key, op, values in requirements if key == OWNER_NAME and op == "In"), None)
        if owners is None:
            return None
        with self._lock:
            return [self._objects[key] for owner in owners for key in self._by_owner.get(owner, ())]

    def _index(self, key: Key, obj: dict | None) -> None:
        """Keep `_by_owner` in step with `_objects[key]` becoming `obj` (None: gone); under the lock."""
        before = self._objects.get(key)
        if before is not None:
            owner = ((before.get("metadata") or {}).get("labels") or {}).get(OWNER_NAME)
            if owner is not None:
                self._by_owner.get(owner, set()).discard(key)
        if obj is not None:
            owner = ((obj.get("metadata") or {}).get("labels") or {}).get(OWNER_NAME)
            if owner is not None:
                self._by_owner.setdefault(owner, set()).add(key)

    def get(self, namespace: str, name: str) -> dict | None:
        with self._lock:
            return self._objects.get((namespace, name))

    def run(self, stop: threading.Event) -> None:
        """List and watch until `stop` is set; each failure is logged once and retried after `retry_seconds`."""
        while not stop.is_set():
            try:
                version = self._list()
                for type_, obj in self._watch(version):
                    self.take(type_, obj)
                    if stop.is_set():
                        return
            except ApiError as exc:
                if exc.status == 410:
                    log.info("%s: resourceVersion too old, listing again", self.kind)
                    continue
                log.warning(
                    "%s: %s (keeping the last state; listing again in %.0fs)", self.kind, exc, self.retry_seconds
                )
                stop.wait(self.retry_seconds)

    def _watch(self, version: str) -> Iterator[tuple[str, dict]]:
        if self.label_selector:
            return self.kube.watch(self.api_version, self.kind, version, self.watch_seconds, self.label_selector)
        return self.kube.watch(self.api_version, self.kind, version, self.watch_seconds)

    def selects(self, labels: dict[str, str]) -> bool:
        """Whether an object with `labels` belongs in this reflector's store."""
        return selectors.selected(self.requirements, labels)

    def covers(self, requirements: list[selectors.Requirement]) -> bool:
        """Whether every object a selector of `requirements` matches is one this reflector follows."""
        return all(requirement in requirements for requirement in self.requirements)

    def expect_deletion(self, namespace: str, name: str) -> None:
        """iotsec is deleting this object: when it leaves the store, by the watch or a list, nobody is told."""
        now = time.monotonic()
        with self._lock:  # a request whose deletion failed is forgotten in time too
            _keep_in_time_order(self._deleting, (namespace, name), now, now, lambda asked: asked)

    def _ours(self, key: Key) -> bool:
        """Whether iotsec asked for this object's deletion a moment ago (under the lock; the watch's event or a list
        settles the request: iotsec's own `forget` does not, so that a late event of that object is not news)."""
        asked = self._deleting.pop(key, None)
        return asked is not None and _recent(asked)

    def take(self, type_: str, obj: dict) -> None:
        """One watch event."""
        removed = self._apply(type_, obj, watched=True)
        if removed is not None:
            self._report_gone([removed])

    def _report_gone(self, objects: list[dict]) -> None:
        if not objects:
            return
        try:
            self.on_gone(objects)
        except Exception:  # the store is right whatever a listener does with it: the watch goes on
            log.exception("%s: reporting %d objects gone failed", self.kind, len(objects))

    def _list(self) -> str:
        with self._lock:
            began = self._taken
        if self.label_selector:
            items, version = self.kube.list_at(self.api_version, self.kind, self.label_selector)
        else:
            items, version = self.kube.list_at(self.api_version, self.kind)
        with self._lock:
            held = self._objects
            before = {key: _version(obj) for key, obj in held.items()}
            listed = {
                _key(obj): _slim(obj) for obj in items if self.selects((obj.get("metadata") or {}).get("labels") or {})
            }
            self._objects = self._merged(listed, version, began)
            self._applied = {key: count for key, count in self._applied.items() if key in self._objects}
            missing = before.keys() - self._objects.keys()  # deleted while the watch was down
            if version.isdigit():  # gone by the list's word: a late copy from before it must not bring it back
                for key in missing:
                    self._remember_deletion(key, int(version))
            vanished = [held[key] for key in missing if not self._ours(key)]
            if {key: _version(obj) for key, obj in self._objects.items()} != before or not before:
                self.changes += 1  # a list after a watch ended: a change only if some object is not as it was
            self._by_owner = {}
            for key, obj in self._objects.items():
                owner = ((obj.get("metadata") or {}).get("labels") or {}).get(OWNER_NAME)
                if owner is not None:
                    self._by_owner.setdefault(owner, set()).add(key)
        self.lists += 1
        self.synced.set()
        self.on_change()
        self._report_gone(vanished)
        return version

    def _merged(self, listed: dict[Key, dict], version: str, began: int) -> dict[Key, dict]:
        """The store after a list read at `version`, asked for when the store's count was `began`: the listed
        objects, except a copy the store took since (the answer to one of iotsec's writes, `observe`) at a version
        past the list's; the watch from `version` brings its events again. Without this, a list put an older copy
        back (a domain saw its labels missing from a namespace it had just labelled) until the next event. What
        came before the list was asked for, the list knows better (whatever its versions say). No watch event
        arrives meanwhile: the watch runs on the list's thread, after it."""
        if not version.isdigit():
            return listed
        for key, obj in self._objects.items():
            written = _counter(obj)
            if self._applied.get(key, 0) > began and written is not None and written > int(version):
                listed[key] = obj
        return listed

    def _remember_deletion(self, key: Key, version: int) -> None:
        now = time.monotonic()
        _keep_in_time_order(self._gone, key, (version, now), now, lambda gone: gone[1])

    def _deleted_since(self, key: Key, obj: dict) -> bool:
        """Whether `obj` is a copy from before a deletion of it reported a moment ago."""
        gone = self._gone.get(key)
        return gone is not None and _recent(gone[1]) and _at_or_before(obj, gone[0])

    def _apply(self, type_: str, obj: dict, watched: bool = False) -> dict | None:
        """Take one copy: a watch event's (`watched`), or one of iotsec's writes (`observe`) or deletions (`forget`).
        Returns the copy a watch event removed, unless iotsec asked for that deletion."""
        with self._lock:
            # an object whose labels left the selection arrives as DELETED from a watch, but as itself from a write
            key = _key(obj)
            held = self._objects.get(key)
            if type_ == "DELETED" and _another(obj, held):
                if watched:
                    self._ours(key)  # settles iotsec's request for that deletion
                return None  # an earlier incarnation's deletion, after the answer that made it again (`observe`)
            if type_ == "DELETED" or not self.selects((obj.get("metadata") or {}).get("labels") or {}):
                self._index(key, None)
                self._objects.pop(key, None)
                self._applied.pop(key, None)
                self.changes += held is not None
                deleted_at = _counter(obj) if type_ == "DELETED" else None
                if deleted_at is None and type_ == "DELETED" and held is not None:
                    deleted_at = _counter(held)  # iotsec's `forget`: no event of the copy it deleted is news
                if deleted_at is not None:
                    self._remember_deletion(key, deleted_at)
                removed = held if watched and not self._ours(key) else None
            elif _older(obj, held):
                return None  # the watch event of an earlier write, after the answer of a later one (`observe`)
            elif self._deleted_since(key, obj):
                return None  # a copy from before the object's deletion, arriving after it
            else:
                removed = None
                # the same version again (the body a kopf event carried, the watch event of a write already
                # observed) is no change: counting it made every tenant's resync invalidate the domains' analysis
                self.changes += held is None or not _version(obj) or _version(obj) != _version(held)
                self._taken += 1
                self._applied[key] = self._taken
                self._index(key, obj)
                self._objects[key] = _slim(obj)
        self.on_change()
        return removed


class WatchCache:
    """Reflectors for a few kinds the operator lists on every reconcile (domains, tenants, namespaces, policies), so
    those lists are answered from memory instead of the API server. `list` answers only when the kind is cached,
    its reflector has listed once and the selector is one it can evaluate; otherwise None, and the caller asks the
    API server. Objects the operator itself writes are recorded at once (`observe`), so a reconcile reads its own
    writes even before their watch event arrives.

    `managed` kinds are followed only as far as `managed_selector` selects (iotsec's own objects): enough for
    `Kube.apply` to see that an object it wrote is unchanged since (`current`), and for lists that select within
    them (prune's owner selectors).

    `on_gone(api_version, kind, obj)`, when set, hears of every object a reflector reports gone (see `Reflector`),
    on that reflector's thread."""

    def __init__(
        self,
        kube: Kube,
        kinds: tuple[tuple[str, str], ...],
        lookups: tuple[tuple[str, str], ...] = (),
        managed: tuple[tuple[str, str], ...] = (),
        managed_selector: str | None = None,
    ):
        self.kube, self.lookups = kube, set(lookups)  # lookups: the kinds `get` also answers from memory
        self.on_gone: Callable[[str, str, dict], None] | None = None
        self.reflectors = {
            (api_version, kind): Reflector(kube, api_version, kind, lambda: None, on_gone=self._gone(api_version, kind))
            for api_version, kind in kinds
        }
        for api_version, kind in managed:
            if (api_version, kind) not in self.reflectors:
                self.reflectors[api_version, kind] = Reflector(
                    kube,
                    api_version,
                    kind,
                    lambda: None,
                    label_selector=managed_selector,
                    on_gone=self._gone(api_version, kind),
                )
        self.hits = 0
        self.sync_seconds = 60.0  # how long `view` waits for a kind's first list
        self._stop = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    def _gone(self, api_version: str, kind: str) -> Callable[[list[dict]], None]:
        def report(objects: list[dict]) -> None:
            listener = self.on_gone
            for obj in objects if listener is not None else ():
                try:
                    listener(api_version, kind, obj)
                except Exception:  # the next object's owner is still told
                    log.exception("%s: reporting %s gone failed", kind, (obj.get("metadata") or {}).get("name"))

        return report

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        for (_, kind), reflector in self.reflectors.items():
            threading.Thread(target=reflector.run, args=(self._stop,), name=f"cache-{kind}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None, copy_each: bool = True
    ) -> list[dict] | None:
        """`copy_each=False`: the cache's own objects, for a caller that only reads them (prune: the copies of every
        child of every tenant on each resync were a twentieth of the operator's CPU)."""
        reflector = self.reflectors.get((api_version, kind))
        if reflector is None or not reflector.synced.is_set():
            return None
        requirements = selectors.parse_selector(label_selector or "")
        if requirements is None or not reflector.covers(requirements):
            return None
        self.hits += 1
        found = reflector.candidates(requirements)
        return [
            copy.deepcopy(obj) if copy_each else obj
            for obj in (reflector.items() if found is None else found)
            if (namespace is None or (obj.get("metadata") or {}).get("namespace") == namespace)
            and selectors.selected(requirements, (obj.get("metadata") or {}).get("labels") or {})
        ]

    def view(self, api_version: str, kind: str) -> list[dict] | None:
        """Every object of a kind the cache follows whole, as the cache holds them: not copied, so read-only (the
        reflector replaces an object on each event, never changes one). None: not cached, or not listed yet. For
        the reconciles that read every namespace, domain or tenant: a copy of each cost more than the reconcile."""
        reflector = self.reflectors.get((api_version, kind))
        if reflector is None or reflector.label_selector:
            return None
        # a reconcile right after start waits for the first list: asking the API server instead, every one of
        # hundreds did the list the cache was doing (1,000 tenants each), and starved it
        if not reflector.synced.wait(self.sync_seconds):
            return None
        self.hits += 1
        return reflector.items()

    def get(self, api_version: str, kind: str, name: str, namespace: str | None) -> dict | None:
        """One object of a `lookups` kind, when the cache holds it; None: ask the API server (a miss may only mean
        that its watch event has not arrived)."""
        reflector = self.reflectors.get((api_version, kind))
        if (api_version, kind) not in self.lookups or reflector is None or not reflector.synced.is_set():
            return None
        found = reflector.get(namespace or "", name)
        if found is not None:
            self.hits += 1
        return copy.deepcopy(found) if found is not None else None

    def changes(self, api_version: str, kind: str) -> int | None:
        """How often the objects of a kind followed whole changed (None: not followed, or not listed yet): a caller
        that computed something from them may reuse it while this count stays the same."""
        reflector = self.reflectors.get((api_version, kind))
        if reflector is None or reflector.label_selector or not reflector.synced.is_set():
            return None
        return reflector.changes

    def current(
        self, api_version: str, kind: str, name: str, namespace: str | None, labels: dict[str, str]
    ) -> tuple[bool, dict | None]:
        """(whether the cache follows an object of this kind with these labels now, the object or None when it is
        not there): a watched kind, listed once, and labels the reflector's selector selects."""
        reflector = self.reflectors.get((api_version, kind))
        if reflector is None or not reflector.synced.is_set() or not reflector.selects(labels):
            return False, None
        found = reflector.get(namespace or "", name)
        return True, copy.deepcopy(found) if found is not None else None

    def observe(self, obj: dict) -> None:
        """The server's answer to one of our writes: the cache holds it now, not one watch event later."""
        reflector = self.reflectors.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if reflector is not None and reflector.synced.is_set():
            reflector._apply("MODIFIED", copy.deepcopy(obj))  # the caller keeps its own: views never change

    def expect_gone(self, api_version: str, kind: str, name: str, namespace: str | None) -> None:
        reflector = self.reflectors.get((api_version, kind))
        if reflector is not None:
            reflector.expect_deletion(namespace or "", name)

    def forget(
        self, api_version: str, kind: str, name: str, namespace: str | None, deleted: dict | None = None
    ) -> None:
        """iotsec deleted the object, or a handler was told of its deletion (`deleted`: the body its event carried;
        an object made again since under that name, another uid, stays)."""
        reflector = self.reflectors.get((api_version, kind))
        if reflector is not None:
            meta = {**((deleted or {}).get("metadata") or {}), "name": name, "namespace": namespace or ""}
            reflector._apply("DELETED", {**(deleted or {}), "metadata": meta})
