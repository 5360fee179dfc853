"""Webhook availability as deployed (issue 18): three webhook replicas behind their Service, reviews sent through
the API server without pause (server-side dry-run creates of a conforming Deployment, so every one is a real
admission call), and one replica deleted as a rollout or a node drain deletes it: not one review may fail. The
webhook drains on SIGTERM (not ready at once, each answer closing its connection, what is in flight answered) and
the API server's next review goes to another replica."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import eventually
from tests.e2e.deployed import NAMESPACE, RELEASE, domain_namespace, require_install
from tests.e2e.test_deployed import _deployment

WEBHOOK = f"{RELEASE}-webhook"
REPLICAS = 3
WORKERS = 16
SECONDS = 24.0
DELETE_AT = 6.0


def _ready_endpoints(core) -> int:
    endpoints = core.read_namespaced_endpoints(WEBHOOK, NAMESPACE)
    return sum(len(subset.addresses or ()) for subset in endpoints.subsets or ())


@pytest.fixture
def three_replicas(api_client, core):
    apps = require_install(api_client)
    before = apps.read_namespaced_deployment(WEBHOOK, NAMESPACE).spec.replicas
    apps.patch_namespaced_deployment_scale(WEBHOOK, NAMESPACE, {"spec": {"replicas": REPLICAS}})
    try:
        eventually(lambda: _ready_endpoints(core) == REPLICAS, timeout=120, what=f"{REPLICAS} webhook endpoints")
        yield apps
    finally:
        apps.patch_namespaced_deployment_scale(WEBHOOK, NAMESPACE, {"spec": {"replicas": before}})


def _review_forever(apps, namespace: str, until: float) -> Counter[str]:
    outcomes: Counter[str] = Counter()
    body = _deployment("availability", namespace, privileged=False)
    while time.monotonic() < until:
        try:
            apps.create_namespaced_deployment(namespace, body, dry_run="All")
            outcomes["admitted"] += 1
        except ApiException as exc:
            outcomes[f"{exc.status} {exc.reason}: {str(exc.body)[:300]}"] += 1
    return outcomes


def _delete(core, pod: str) -> None:
    core.delete_namespaced_pod(pod, NAMESPACE)  # graceful, as a rollout or a drain deletes it


def test_deleting_a_webhook_replica_under_load_fails_no_review(api_client, core, custom, three_replicas):
    apps: Any = three_replicas
    with domain_namespace(core, custom, prefix="avail", imagePinning="any") as namespace:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=webhook"
        victim = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items[0].metadata.name
        started = time.monotonic()
        until = started + SECONDS
        with ThreadPoolExecutor(WORKERS) as pool:
            running = [pool.submit(_review_forever, apps, namespace, until) for _ in range(WORKERS)]
            time.sleep(DELETE_AT)
            _delete(core, victim)
            outcomes = sum((r.result() for r in running), Counter())
        elapsed = time.monotonic() - started
    total = sum(outcomes.values())
    print(f"\nwebhook availability: {total} reviews in {elapsed:.0f} s ({total / elapsed:.0f}/s), {victim} deleted")
    failed = {k: v for k, v in outcomes.items() if k != "admitted"}
    assert outcomes["admitted"] > 0
    assert failed == {}, f"reviews failed while {victim} went away: {failed}"
