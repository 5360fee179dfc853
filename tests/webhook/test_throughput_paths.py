"""The shortcuts the webhook's hot path takes (issue 18), each checked to answer exactly as the long way does."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import REGISTRY

from iotsec.admission import podspecs, secrets
from iotsec.model.workloads import BUILT_IN, parse_path
from iotsec.servers.bounded import WEBHOOK_BOUNDS
from iotsec.servers.bounded import server as bounded
from iotsec.servers.webhook import server as webhook
from tests.webhook.test_throughput_answers import start_webhook
from tests.webhook.test_webhook import _deployment, admission_review

# names and values under which the secret scan says yes and no, short enough to be remembered
PAIRS = [
    ("DB_PASSWORD", "hunter2hunter2"),
    ("DB_PASSWORD", "/run/secrets/db"),
    ("DB_PASSWORD", "${DB_PASS:Hunter2}"),
    ("DATABASE_URL", "postgres://app:s3cret@db:5432/app"),
    ("DATABASE_URL", "postgres://db:5432/app"),
    ("API_KEY", "0123456789abcdef0123"),
    ("TLS_KEY", "/etc/tls/tls.key"),
    ("LOG_LEVEL", "debug"),
    ("SPRING_APPLICATION_JSON", '{"mqtt": {"password": "letmein!"}}'),
    ("TOKEN_TTL", "3600"),
    ("GITHUB", "ghp_" + "a" * 36),
]
FLAGS = ["--db-password=hunter2hunter2", "--password=$(DB_PASSWORD)", "--target=https://tsdb:8443", "-v", "check"]


@pytest.mark.parametrize(("name", "value"), PAIRS)
def test_a_remembered_secret_decision_is_the_one_made_afresh(name, value):
    afresh = secrets._literal_secret(name, value)
    assert secrets.literal_secret(name, value) is afresh
    assert secrets.literal_secret(name, value) is afresh, "the second answer comes from the cache"


def test_the_secret_scan_remembers_short_values_only():
    secrets._remembered_literal_secret.cache_clear()
    secrets.literal_secret("DB_PASSWORD", "hunter2hunter2")
    secrets.literal_secret("DB_PASSWORD", "hunter2hunter2")
    assert secrets._remembered_literal_secret.cache_info().hits == 1
    long_value = "x" * (secrets.MAX_REMEMBERED_CHARS + 1)
    assert secrets.literal_secret("DB_PASSWORD", long_value) is secrets._literal_secret("DB_PASSWORD", long_value)
    assert secrets._remembered_literal_secret.cache_info().currsize == 1, "a client's long value is not kept"


@pytest.mark.parametrize("argument", FLAGS)
def test_a_remembered_flag_decision_is_the_one_made_afresh(argument):
    afresh = secrets._secret_flag(argument) if argument.startswith("-") else None
    assert secrets.secret_flag(argument) == afresh
    assert secrets.secret_flag(argument) == afresh


def _requests_total(**labels: str) -> float:
    return REGISTRY.get_sample_value("iotsec_admission_requests_total", labels) or 0.0


def test_request_counts_past_the_kept_children_still_count(monkeypatch):
    monkeypatch.setattr(webhook._Children, "MAX_KEPT", 1)
    children = webhook._Children(webhook.REQUESTS)
    for kind in ("ThroughputA", "ThroughputB", "ThroughputB"):
        children(kind, "CREATE", "skipped").inc()
    assert len(children.kept) == 1
    assert _requests_total(kind="ThroughputA", operation="CREATE", decision="skipped") == 1
    assert _requests_total(kind="ThroughputB", operation="CREATE", decision="skipped") == 2


async def test_a_small_body_neither_waits_for_nor_locks_the_body_budget(tmp_path: Path):
    """A review of a few KB reserves nothing, so it needs no turn at the budget's lock: it is answered while the
    lock is held (the large bodies' bookkeeping is no queue for it)."""
    runner, site, port, client_tls = await start_webhook(tmp_path)
    body = json.dumps(admission_review(_deployment("conforming/mqtt-gateway.yaml"), uid="u-small")).encode()
    assert len(body) < bounded.UNBUDGETED_BODY_BYTES
    budget = site.listener.bodies
    try:
        connector = aiohttp.TCPConnector(ssl=client_tls)
        async with aiohttp.ClientSession(connector=connector) as session, budget._freed:
            url = f"https://localhost:{port}/validate"
            async with asyncio.timeout(5):
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as answer:
                    assert answer.status == 200
                    assert json.loads(await answer.read())["response"] == {"uid": "u-small", "allowed": True}
        assert budget.used == 0
    finally:
        await runner.cleanup()


SHAPES = [
    {"spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": []}}}},
    {"spec": {"template": {"spec": {"containers": []}}}},
    {"spec": {"template": {"spec": "not a dict"}}},
    {"spec": {"template": "not a dict"}},
    {"spec": {"template": None}},
    {"spec": []},
    {"spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}},
    {},
]


@pytest.mark.parametrize("obj", SHAPES)
@pytest.mark.parametrize("path", sorted({p for c in BUILT_IN for p in c.pod_spec_paths if "[" not in p}))
def test_a_plain_pod_spec_path_is_walked_as_the_recursive_walk_does(obj, path):
    shortcut = list(podspecs._walk(obj, parse_path(path)))
    assert shortcut == [(node, real.removeprefix("x."), owner) for node, real, owner in _long_walk(obj, path)]


def _long_walk(obj: object, path: str) -> list[tuple[object, str, object]]:
    """The recursive walk, entered one level down (a non-empty path) so that it never takes the shortcut."""
    segments = parse_path(path)
    if not isinstance(obj, dict):
        return []
    return list(podspecs._walk(obj.get(segments[0]), segments[1:], f"x.{segments[0]}", obj))


async def test_a_deadline_is_rearmed_without_asking_the_timer():
    """The guard notes when its timer wakes instead of asking the handle; the timer it keeps is the one it noted,
    and a shorter deadline replaces it."""
    listener = bounded.Listener("test", WEBHOOK_BOUNDS, None, lambda: None, 0)  # type: ignore[arg-type]
    guard = bounded._Guard(listener)
    guard.loop = asyncio.get_running_loop()
    guard.arm("idle_timeout", WEBHOOK_BOUNDS.idle_seconds)
    first = guard.deadline
    assert first is not None
    assert first.when() == guard.wakes <= guard.due
    guard.arm("header_timeout", WEBHOOK_BOUNDS.header_seconds)
    assert guard.deadline is first, "a later deadline keeps the timer"
    guard.arm("body_timeout", 0.01)
    assert guard.deadline is not first
    assert first.cancelled()
    assert guard.deadline.when() == guard.wakes == guard.due
    guard.stop_timer()
