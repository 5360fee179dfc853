"""The webhook's CA bundle on a real API server: a ValidatingWebhookConfiguration created after the operator
started gets it within seconds (a watch, not the hourly check), and an unreadable TLS Secret is reported and
left alone."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from iotsec.build.webhook import client_config, validating_webhook_configuration
from tests.e2e.conftest import eventually
from tests.e2e.processes import Operator

SUFFIX = uuid.uuid4().hex[:5]
NAMESPACE, SECRET, CONFIGURATION = f"iotsec-tls-{SUFFIX}", f"webhook-tls-{SUFFIX}", f"iotsec-tls-{SUFFIX}"
NEVER = {"iotsec.io/e2e-never-matches": SUFFIX}
INJECTION_SECONDS = 5.0


@pytest.fixture(scope="module")
def admission(api_client) -> client.AdmissionregistrationV1Api:
    return client.AdmissionregistrationV1Api(api_client)


@pytest.fixture(scope="module")
def operator(api_client, core, admission, tmp_path_factory) -> Iterator[Operator]:
    core.create_namespace({"metadata": {"name": NAMESPACE, "labels": {"kubernetes.io/metadata.name": NAMESPACE}}})
    running = Operator(tmp_path_factory.mktemp("webhook-tls") / "operator.log")
    running.start(
        IOTSEC_WEBHOOK_SECRET_NAME=SECRET,
        IOTSEC_WEBHOOK_NAMESPACE=NAMESPACE,
        IOTSEC_WEBHOOK_CONFIGURATION=CONFIGURATION,
        IOTSEC_WEBHOOK_TLS_CHECK_SECONDS="3600",  # only the watch can inject within the test's seconds
    )
    eventually(lambda: core.read_namespaced_secret(SECRET, NAMESPACE).data, timeout=60, what="the TLS Secret")
    yield running
    running.stop()
    try:
        admission.delete_validating_webhook_configuration(CONFIGURATION)
    except ApiException as exc:
        if exc.status != 404:
            raise
    core.delete_namespace(NAMESPACE)


def harmless_configuration() -> dict:
    """iotsec's configuration, selecting no object at all: it must not fail other tests' writes closed."""
    made = validating_webhook_configuration(CONFIGURATION, client_config(url="https://127.0.0.1:9/validate"), NAMESPACE)
    for webhook in made["webhooks"]:
        webhook["objectSelector"] = {"matchLabels": NEVER}
    return made


def _bundles(admission) -> set[str]:
    found = admission.read_validating_webhook_configuration(CONFIGURATION)
    return {webhook.client_config.ca_bundle or "" for webhook in found.webhooks}


def test_a_configuration_created_after_the_operator_started_gets_the_bundle_within_seconds(operator, core, admission):
    expected = core.read_namespaced_secret(SECRET, NAMESPACE).data["ca-bundle.crt"]
    started = time.monotonic()
    admission.create_validating_webhook_configuration(harmless_configuration())
    eventually(lambda: _bundles(admission) == {expected}, timeout=INJECTION_SECONDS, interval=0.1, what="caBundle")
    print(f"caBundle injected {time.monotonic() - started:.2f}s after the configuration was created")
    assert base64.b64decode(expected).decode().startswith("-----BEGIN CERTIFICATE-----")


def test_a_bundle_someone_removes_is_put_back_within_seconds(operator, admission):
    eventually(lambda: "" not in _bundles(admission), timeout=INJECTION_SECONDS, what="caBundle present")
    current = admission.read_validating_webhook_configuration(CONFIGURATION)
    removal = [{"op": "remove", "path": f"/webhooks/{i}/clientConfig/caBundle"} for i in range(len(current.webhooks))]
    admission.patch_validating_webhook_configuration(CONFIGURATION, removal)  # a list: a JSON patch
    eventually(lambda: "" not in _bundles(admission), timeout=INJECTION_SECONDS, interval=0.1, what="re-injected")


def test_an_unreadable_secret_is_reported_and_left_alone(operator, core, admission):
    damaged = {"tls.crt": base64.b64encode(b"damaged").decode(), "tls.key": base64.b64encode(b"damaged").decode()}
    core.replace_namespaced_secret(
        SECRET,
        NAMESPACE,
        {
            "metadata": {"name": SECRET, "labels": {"app.kubernetes.io/managed-by": "iotsec"}},
            "type": "kubernetes.io/tls",
            "data": damaged,
        },
    )
    before = _bundles(admission)
    admission.patch_validating_webhook_configuration(CONFIGURATION, {"metadata": {"labels": {"nudge": SUFFIX}}})

    def warned() -> bool:
        events = core.list_namespaced_event("default", field_selector=f"involvedObject.name={CONFIGURATION}").items
        return any(e.reason == "KeyUnreadable" and e.type == "Warning" for e in events)

    eventually(warned, timeout=15, what="a KeyUnreadable Warning event on the configuration")
    assert f'iotsec_key_unreadable{{secret="{NAMESPACE}/{SECRET}"}} 1.0' in operator.metrics()
    assert core.read_namespaced_secret(SECRET, NAMESPACE).data == damaged, "never overwritten"
    assert _bundles(admission) == before, "the bundle is left as it was"
    core.patch_namespaced_secret(
        SECRET, NAMESPACE, {"metadata": {"annotations": {"iotsec.io/replace-unreadable": "true"}}}
    )
    admission.patch_validating_webhook_configuration(CONFIGURATION, {"metadata": {"labels": {"nudge": "again"}}})
    eventually(
        lambda: "ca-bundle.crt" in (core.read_namespaced_secret(SECRET, NAMESPACE).data or {}),
        timeout=15,
        what="replaced once a person asked",
    )
    fresh = core.read_namespaced_secret(SECRET, NAMESPACE).data["ca-bundle.crt"]
    eventually(lambda: _bundles(admission) == {fresh}, timeout=INJECTION_SECONDS, what="the new CA injected")
