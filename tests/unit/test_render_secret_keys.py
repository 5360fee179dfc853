"""`iotsec render` gives each key Secret under the data keys the operator writes into it (issue 15: render ≡ live,
Secret values aside). It gave a single `placeholder` key, so no rendered Secret had the shape of the live one."""

from __future__ import annotations

import typing
from datetime import UTC, datetime, timedelta

import pytest

from iotsec.api.tenantisolation import AppKeyAlgorithm, CAKeyAlgorithm
from iotsec.build import audit, render, tenant
from iotsec.controllers.tenant import _volume_key
from iotsec.model.labels import KEY_PURPOSE_LABEL
from iotsec.model.manifests import load_documents
from iotsec.pki import appkeys, certs, devices
from tests.conftest import EXAMPLES

NOW = datetime(2026, 12, 3, tzinfo=UTC)


@pytest.mark.parametrize("algorithm", typing.get_args(AppKeyAlgorithm))
def test_an_application_key_secret_is_rendered_under_the_keys_of_a_new_key_ring(algorithm):
    ring, _ = appkeys.ensure_key_ring(None, algorithm, timedelta(days=90), timedelta(days=7), NOW)
    assert set(tenant.app_key_keys(algorithm)) == set(ring.to_secret_data())


@pytest.mark.parametrize("algorithm", typing.get_args(CAKeyAlgorithm))
def test_a_device_ca_secret_is_rendered_under_the_keys_of_a_new_ca(algorithm):
    state, _ = devices.ensure_device_ca(None, "acme", algorithm, timedelta(days=365), timedelta(days=30), NOW)
    assert set(tenant.DEVICE_CA_KEYS) == set(state.to_secret_data())


def test_a_volume_key_secret_is_rendered_under_the_keys_the_operator_generates():
    assert set(tenant.VOLUME_KEY_KEYS) == set(_volume_key())


def test_every_rendered_key_secret_of_the_examples_has_the_operator_s_keys():
    secrets = [o for o in render.render(load_documents([EXAMPLES / "platform"])).objects if o["kind"] == "Secret"]
    keys = {
        (s["metadata"]["labels"].get(KEY_PURPOSE_LABEL), s["metadata"]["name"]): set(s["stringData"]) for s in secrets
    }
    public = set(tenant.app_key_keys("ed25519"))
    assert keys[("app-key", "iotsec-app-meter-ingest-key")] == public  # ed25519: its public key is published
    assert keys[("app-key", "iotsec-app-billing-export-key")] == public - {appkeys.KEY_PUBLIC}  # hmac-sha256
    assert keys[("device-ca", "iotsec-device-ca-acme")] == set(tenant.DEVICE_CA_KEYS)
    assert keys[("volume-key", "iotsec-volume-key-globex")] == set(tenant.VOLUME_KEY_KEYS)
    assert all(set(s["stringData"].values()) == {tenant.PLACEHOLDER} for s in secrets), "never key material"


def test_an_audit_policy_s_sink_secrets_are_rendered_under_the_keys_the_operator_issues():
    """They were not rendered at all ("key material"), though the operator applies three Secrets per policy."""
    tls, _ = certs.ensure_webhook_tls(None, ["sink"], [], NOW)
    client, _ = certs.ensure_client_auth(None, "kube-apiserver", NOW)
    objects = render.render(load_documents([EXAMPLES / "platform" / "40-audit.yaml"])).objects
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    assert set(secrets["iotsec-audit-sink-tls-platform-audit"]["stringData"]) == set(tls.to_secret_data())
    assert set(secrets["iotsec-audit-client-platform-audit"]["stringData"]) == set(client.to_secret_data())
    assert set(secrets["iotsec-audit-signing-platform-audit"]["stringData"]) == {audit.SIGNING_KEY_FIELD}
    assert render.CLIENT_KEYS["bearerToken"] == ("token",)
    for secret in secrets.values():
        assert set(secret["stringData"].values()) == {tenant.PLACEHOLDER}
        assert secret["metadata"]["namespace"] == render.PLATFORM.audit_namespace
