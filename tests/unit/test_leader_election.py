"""Leader election on a Lease (services.leader): exactly one holder, takeover only after the holder's record has
stood still for the lease duration on the taker's own clock, compare-and-swap against racing candidates, a
released lease taken at once, a leader that cannot renew knows it has lost."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from iotsec.k8s.kube import ApiError
from iotsec.services.leader import Elector, Timing

TIMING = Timing(duration=8, renew_deadline=6, retry=1)


class Leases:
    """An API server's Lease store: get, create if absent, replace only at the stored resourceVersion."""

    def __init__(self) -> None:
        self.stored: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.writes: list[str] = []

    def _check(self) -> None:
        if self.down:
            raise ApiError("cannot reach the API server", None)

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        self._check()
        return copy.deepcopy(self.stored)

    def create(self, obj: dict[str, Any]) -> bool:
        self._check()
        if self.stored is not None:
            return False
        self._store(obj)
        return True

    def replace(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        self._check()
        assert self.stored is not None
        if obj["metadata"].get("resourceVersion") != self.stored["metadata"]["resourceVersion"]:
            return None
        self._store(obj)
        return copy.deepcopy(self.stored)

    def _store(self, obj: dict[str, Any]) -> None:
        self.version += 1
        self.stored = copy.deepcopy(obj)
        self.stored["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(obj["spec"]["holderIdentity"])

    @property
    def holder(self) -> str:
        return (self.stored or {}).get("spec", {}).get("holderIdentity", "")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def candidate(leases: Leases, name: str, clock: Clock, wall: datetime | None = None) -> Elector:
    moment = wall or datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
    return Elector(leases, "iotsec-system", "iotsec-operator", name, TIMING, clock, lambda: moment)  # type: ignore[arg-type]


def test_the_first_candidate_holds_the_lease_and_the_second_stands_by():
    leases, clock = Leases(), Clock()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    assert a.try_hold()
    assert not b.try_hold()
    assert leases.holder == "a"
    spec = leases.stored["spec"]  # type: ignore[index]
    assert spec["leaseDurationSeconds"] == 8
    assert spec["renewTime"].endswith("Z")
    assert "." in spec["renewTime"], "a Lease's times are MicroTime"


def test_a_renewing_leader_keeps_the_lease_however_long_it_runs():
    leases, clock = Leases(), Clock()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    assert a.try_hold()
    for _ in range(30):
        clock.t += TIMING.retry
        assert a.try_hold(), "renewed"
        assert not b.try_hold()
    assert leases.holder == "a"
    assert not a.lost()


def test_a_killed_leader_is_replaced_once_its_record_stood_still_for_the_duration():
    leases, clock = Leases(), Clock()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    assert a.try_hold()
    assert not b.try_hold()  # b sees the record now
    clock.t += TIMING.duration - 0.5
    assert not b.try_hold(), "not yet: the record may still be renewed"
    clock.t += 1
    assert b.try_hold()
    assert leases.holder == "b"
    assert leases.stored["spec"]["leaseTransitions"] == 1  # type: ignore[index]
    assert not a.try_hold(), "the old leader, back from a pause, finds b holding a fresh record"
    assert a.lost()


def test_expiry_is_judged_on_the_takers_clock_not_the_renew_time_another_machine_wrote():
    leases, clock = Leases(), Clock()
    skewed = candidate(leases, "a", clock, wall=datetime(2020, 1, 1, tzinfo=UTC))  # its wall clock is years behind
    assert skewed.try_hold()
    b = candidate(leases, "b", clock)
    for _ in range(20):
        clock.t += TIMING.retry
        assert skewed.try_hold()
        assert not b.try_hold(), "an old-looking renewTime that keeps changing is a live leader"


def test_two_standbys_racing_for_an_expired_lease_one_wins():
    leases, clock = Leases(), Clock()
    a, b, c = (candidate(leases, n, clock) for n in "abc")
    assert a.try_hold()
    assert not b.try_hold()
    assert not c.try_hold()
    clock.t += TIMING.duration + 1
    read_by_c = leases.get("coordination.k8s.io/v1", "Lease", "iotsec-operator", "iotsec-system")
    assert b.try_hold()
    real_get = leases.get
    leases.get = lambda *args, **kw: copy.deepcopy(read_by_c)  # type: ignore[method-assign]
    try:
        assert not c.try_hold(), "c read the record before b wrote it: its write at the old version fails"
    finally:
        leases.get = real_get  # type: ignore[method-assign]
    assert leases.holder == "b"


def test_a_released_lease_is_taken_at_the_next_try():
    leases, clock = Leases(), Clock()
    a, b = candidate(leases, "a", clock), candidate(leases, "b", clock)
    assert a.try_hold()
    assert not b.try_hold()
    a.release()
    assert leases.holder == ""
    assert b.try_hold(), "no waiting for the duration"
    a.release()
    assert leases.holder == "b", "releasing a lease one no longer holds changes nothing"


def test_a_leader_that_cannot_reach_the_api_server_knows_when_it_has_lost():
    leases, clock = Leases(), Clock()
    a = candidate(leases, "a", clock)
    assert a.try_hold()
    leases.down = True
    clock.t += TIMING.renew_deadline - 1
    assert not a.try_hold(), "an API error is a failed try, never an exception"
    assert not a.lost(), "still inside the renew deadline"
    clock.t += 2
    assert a.lost(), "past the deadline: stop acting, another replica may hold the lease"
    assert candidate(leases, "b", clock).lost(), "a candidate that never held the lease holds nothing"


@pytest.mark.parametrize(("retry", "deadline", "duration"), [(0, 6, 8), (2, 2, 8), (1, 8, 8), (1, 9, 8)])
def test_timings_that_could_let_two_leaders_act_are_refused(retry, deadline, duration):
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        Timing(duration=duration, renew_deadline=deadline, retry=retry)


def test_lease_times_are_written_in_utc_microseconds():
    leases, clock = Leases(), Clock()
    moment = datetime(2026, 12, 3, 23, 0, 0, 123456, tzinfo=UTC) + timedelta(hours=0)
    assert candidate(leases, "a", clock, wall=moment).try_hold()
    assert leases.stored["spec"]["acquireTime"] == "2026-12-03T23:00:00.123456Z"  # type: ignore[index]
