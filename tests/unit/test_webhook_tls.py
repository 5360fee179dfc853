"""The operator's webhook TLS keeping: the CA bundle before the certificate it validates, a watch on the
configuration, and never a key Secret replaced behind anyone's back."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from iotsec.build.webhook import client_config, tls_secret, validating_webhook_configuration
from iotsec.controllers import runtime, webhook_tls
from iotsec.k8s.kube import ApiError
from iotsec.model import keysecrets, secretdata
from iotsec.model.labels import REPLACE_UNREADABLE
from iotsec.pki import certs

NAMESPACE, SECRET, CONFIGURATION = "iotsec-system", "iotsec-webhook-tls", "iotsec"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
VWC = "ValidatingWebhookConfiguration"


def configuration() -> dict[str, Any]:
    made = validating_webhook_configuration(
        CONFIGURATION, client_config(service=(NAMESPACE, "iotsec-webhook", 443)), NAMESPACE
    )
    # every webhook of the configuration needs the bundle, whatever their number (the chart adds the operator's fence)
    made["webhooks"].append({**copy.deepcopy(made["webhooks"][1]), "name": "extra.iotsec.io"})
    return made


class RecordingKube:
    """The API as the handler sees it, recording every write and checking after each one that the certificate
    the webhook serves (the Secret's) validates against the bundle the API server holds (the configuration's)."""

    def __init__(self, with_configuration: bool = True) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        if with_configuration:
            self.objects[(VWC, CONFIGURATION)] = configuration()
        self.writes: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str, str]] = []
        self.now = NOW

    def get(self, api_version, kind, name, namespace=None):
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found is not None else None

    def list(self, api_version, kind, namespace=None, label_selector=None):
        return [copy.deepcopy(obj) for (k, _), obj in self.objects.items() if k == kind]

    def apply(self, obj, owner=None):
        key = (obj["kind"], obj["metadata"]["name"])
        if obj["kind"] == VWC:
            bundles = {w["name"]: w["clientConfig"]["caBundle"] for w in obj["webhooks"]}
            live = self.objects[key]["webhooks"]
            owned = {w["name"]: w for w in obj["webhooks"] if "rules" in w}  # entries the operator adds wholly
            live[:] = [w for w in live if w["name"] != webhook_tls.DOMAIN_KINDS_HOOK]  # server-side apply drops
            live += [copy.deepcopy(w) for w in owned.values()]  # what the manager no longer applies
            for webhook in live:
                assert webhook["name"] in bundles, "the patch names every webhook of the configuration"
                webhook["clientConfig"]["caBundle"] = bundles[webhook["name"]]
        else:
            merged = copy.deepcopy(self.objects.get(key) or {})
            merged.update(copy.deepcopy(obj))
            self.objects[key] = merged
        self.writes.append(("apply", obj["kind"]))
        self.assert_the_api_server_trusts_the_served_certificate()
        return obj

    def delete(self, api_version, kind, name, namespace=None, unchanged_since=None):
        live = self.objects.get((kind, name))
        if live is not None and unchanged_since is not None:
            judged, now = unchanged_since["metadata"], live["metadata"]
            if (judged.get("uid"), judged.get("resourceVersion")) != (now.get("uid"), now.get("resourceVersion")):
                raise ApiError("Precondition failed", 409)
        self.writes.append(("delete", kind))
        return self.objects.pop((kind, name), None) is not None

    def post_event(self, involved, type_, reason, message):
        self.events.append((involved["kind"], type_, reason, message))

    def bundles(self) -> set[str]:
        found = self.objects.get((VWC, CONFIGURATION))
        return {w["clientConfig"].get("caBundle", "") for w in found["webhooks"]} if found else set()

    def secret_data(self) -> dict[str, str]:
        return secretdata.decode(self.objects[("Secret", SECRET)])

    def assert_the_api_server_trusts_the_served_certificate(self) -> None:
        if ("Secret", SECRET) not in self.objects or (VWC, CONFIGURATION) not in self.objects:
            return
        try:
            webhook_tls.read_secret(self.objects[("Secret", SECRET)])
        except keysecrets.KeyUnreadableError:
            return  # a Secret iotsec does not keep: being replaced, as a person asked
        served = self.secret_data()["tls.crt"]
        for encoded in self.bundles():
            bundle = base64.b64decode(encoded).decode()
            assert certs.verify_chain(served, bundle, self.now), (
                f"after {self.writes}: the webhook serves a certificate the API server cannot validate"
            )


@pytest.fixture(autouse=True)
def settings(monkeypatch):
    config = dataclasses.replace(
        runtime.config(),
        webhook_secret_name=SECRET,
        webhook_namespace=NAMESPACE,
        webhook_configuration=CONFIGURATION,
        webhook_extra_dns=(),
        webhook_extra_ips=(),
    )
    monkeypatch.setattr(runtime, "_loaded", config)
    webhook_tls._reported.clear()
    webhook_tls._ignored.clear()


def unreadable_gauge() -> float | None:
    return REGISTRY.get_sample_value("iotsec_key_unreadable", {"secret": f"{NAMESPACE}/{SECRET}"})


# --- order of writes ------------------------------------------------------------------------------------------


def test_at_install_the_bundle_is_injected_before_the_certificate_is_published():
    api = RecordingKube()
    changed = webhook_tls.ensure_webhook_tls(api, NOW)
    assert api.writes == [("apply", VWC), ("apply", "Secret")]
    assert any("CA bundle injected" in reason for reason in changed)
    (encoded,) = api.bundles()  # every webhook, the chart's third one included
    assert base64.b64decode(encoded).decode() == api.secret_data()["ca-bundle.crt"]
    assert webhook_tls.ensure_webhook_tls(api, NOW) == []
    assert len(api.writes) == 2, "nothing rewritten when all is right"


def test_a_ca_rotation_publishes_the_new_ca_before_a_certificate_it_signed():
    api = RecordingKube()
    webhook_tls.ensure_webhook_tls(api, NOW)
    first_ca = api.secret_data()["ca.crt"]
    for step in range(1, 30):  # ten years of checks, each write checked by the recording adapter
        old = api.secret_data()
        api.now = NOW + timedelta(days=150 * step)
        api.writes.clear()
        changed = webhook_tls.ensure_webhook_tls(api, api.now)
        if any("rotated CA" in reason for reason in changed):
            break
    else:
        pytest.fail("the CA was never rotated")
    assert api.writes == [("apply", VWC), ("apply", "Secret")]
    assert api.secret_data()["ca.crt"] != first_ca
    bundle = base64.b64decode(next(iter(api.bundles()))).decode()
    assert certs.verify_chain(old["tls.crt"], bundle, api.now), "a webhook not yet reloaded still validates"


def test_a_reissued_serving_certificate_leaves_the_bundle_alone():
    api = RecordingKube()
    webhook_tls.ensure_webhook_tls(api, NOW)
    api.now = certs.not_after(api.secret_data()["tls.crt"]) - timedelta(days=10)
    api.writes.clear()
    webhook_tls.ensure_webhook_tls(api, api.now)
    assert api.writes == [("apply", "Secret")]


def test_without_a_configuration_the_secret_is_kept_and_the_bundle_follows_it():
    api = RecordingKube(with_configuration=False)
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert api.writes == [("apply", "Secret")]
    api.objects[(VWC, CONFIGURATION)] = configuration()  # the chart installs it later
    assert webhook_tls.ensure_webhook_tls(api, NOW) == [f"CA bundle injected into {VWC} {CONFIGURATION}"]
    api.assert_the_api_server_trusts_the_served_certificate()


def test_a_failed_injection_publishes_no_certificate():
    api = RecordingKube()
    apply = api.apply

    def refused(obj, owner=None):
        if obj["kind"] == VWC:
            raise ApiError("apply ValidatingWebhookConfiguration: 403 Forbidden", 403)
        return apply(obj, owner)

    api.apply = refused  # type: ignore[method-assign]
    with pytest.raises(ApiError):
        webhook_tls.ensure_webhook_tls(api, NOW)
    assert ("Secret", SECRET) not in api.objects


# --- the watch ------------------------------------------------------------------------------------------------


def test_the_operator_watches_its_configuration_only_when_it_keeps_the_certificate():
    probe = (
        "import os, kopf\n"
        "from iotsec.controllers import register\n"
        "from iotsec.model.config import Config\n"
        "register(Config.from_env(os.environ))  # as `iotsec run` does\n"
        "hs = kopf.get_default_registry()._watching.get_all_handlers()\n"
        "found = [h for h in hs if h.selector.any_name == 'validatingwebhookconfigurations']\n"
        "print(len(found), all(h.when(name='iotsec') and not h.when(name='other') for h in found))\n"
    )
    env = {**os.environ, "IOTSEC_WEBHOOK_SECRET_NAME": SECRET, "IOTSEC_WEBHOOK_CONFIGURATION": "iotsec"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "True"]
    env["IOTSEC_WEBHOOK_SECRET_NAME"] = ""  # cert-manager keeps the certificate and injects the bundle
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "True"]


async def test_a_configuration_event_wakes_the_periodic_check_at_once(monkeypatch):
    checks: list[float] = []
    checked = asyncio.Event()

    def count(api, now):
        checks.append(now.timestamp())
        checked.set()
        return []

    monkeypatch.setattr(webhook_tls, "ensure_webhook_tls", count)
    monkeypatch.setattr(webhook_tls, "kube", lambda: None)
    wake = asyncio.Event()
    monkeypatch.setattr(webhook_tls, "_wake", wake)
    task = asyncio.create_task(webhook_tls.keep_current(3600.0, wake))
    try:
        await asyncio.wait_for(checked.wait(), timeout=5)
        checked.clear()
        await webhook_tls.configuration_changed(type="DELETED")
        await webhook_tls.configuration_changed(type="ADDED")
        await asyncio.wait_for(checked.wait(), timeout=5)  # not the hour the interval says
        assert len(checks) == 2
    finally:
        task.cancel()


async def test_a_failed_check_is_retried_soon(monkeypatch):
    calls: list[int] = []
    done = asyncio.Event()

    def flaky(api, now):
        calls.append(1)
        if len(calls) == 1:
            raise ApiError("get Secret: cannot reach the API server")
        done.set()
        return []

    monkeypatch.setattr(webhook_tls, "ensure_webhook_tls", flaky)
    monkeypatch.setattr(webhook_tls, "kube", lambda: None)
    monkeypatch.setattr(runtime, "_loaded", dataclasses.replace(runtime.config(), retry_seconds=0.05))
    task = asyncio.create_task(webhook_tls.keep_current(3600.0, asyncio.Event()))
    try:
        await asyncio.wait_for(done.wait(), timeout=5)
    finally:
        task.cancel()


# --- KeyUnreadable --------------------------------------------------------------------------------------------


def _ours_damaged() -> dict[str, Any]:
    secret = tls_secret(NAMESPACE, SECRET, {"tls.crt": "not a certificate", "tls.key": "x"})
    secret["metadata"]["uid"] = "u-secret"
    return secret


def _foreign_but_valid() -> dict[str, Any]:
    tls, _ = certs.ensure_webhook_tls(None, ["iotsec-webhook"], [], NOW)
    secret = tls_secret(NAMESPACE, SECRET, tls.to_secret_data())
    secret["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "someone-else"}
    return secret


@pytest.mark.parametrize(("make", "why"), [(_ours_damaged, "missing key"), (_foreign_but_valid, "someone else")])
def test_an_unusable_secret_is_reported_never_overwritten(make, why):
    api = RecordingKube()
    before = make()
    api.objects[("Secret", SECRET)] = copy.deepcopy(before)
    assert webhook_tls.ensure_webhook_tls(api, NOW) == []
    assert api.writes == [], "neither the Secret nor the bundle is touched"
    assert api.objects[("Secret", SECRET)] == before
    assert unreadable_gauge() == 1
    ((kind, type_, reason, message),) = api.events
    assert (kind, type_, reason) == (VWC, "Warning", "KeyUnreadable")
    assert why in message
    assert REPLACE_UNREADABLE in message
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert len(api.events) == 1, "one event per episode, not one per check"


def test_without_a_configuration_the_warning_goes_on_the_secret():
    api = RecordingKube(with_configuration=False)
    api.objects[("Secret", SECRET)] = _ours_damaged()
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert [(kind, reason) for kind, _, reason, _ in api.events] == [("Secret", "KeyUnreadable")]


def test_a_person_annotating_the_secret_has_it_replaced_bundle_first():
    api = RecordingKube()
    damaged = _foreign_but_valid()
    api.objects[("Secret", SECRET)] = damaged
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert unreadable_gauge() == 1
    damaged["metadata"]["annotations"] = {REPLACE_UNREADABLE: "true"}
    changed = webhook_tls.ensure_webhook_tls(api, NOW)
    assert api.writes == [("apply", VWC), ("delete", "Secret"), ("apply", "Secret")]
    assert any(REPLACE_UNREADABLE in reason for reason in changed)
    replaced = api.objects[("Secret", SECRET)]
    assert "annotations" not in replaced["metadata"], "the next damage is reported again, not replaced"
    assert webhook_tls.read_secret(replaced) is not None
    assert unreadable_gauge() == 0
    api.objects[("Secret", SECRET)] = _ours_damaged()
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert len(api.events) == 2, "a new episode is announced again"


class FixedMeanwhile(RecordingKube):
    """A person fixes the Secret (a new version) between the operator's read and its delete."""

    def __init__(self, fixed: dict[str, Any]) -> None:
        super().__init__()
        self.fixed = fixed

    def delete(self, api_version, kind, name, namespace=None, unchanged_since=None):
        if kind == "Secret" and self.fixed is not None:
            self.objects[(kind, name)], self.fixed = self.fixed, None
        return super().delete(api_version, kind, name, namespace, unchanged_since)


def test_a_secret_fixed_between_judgement_and_replacement_is_kept_and_used(caplog):
    damaged = _annotated(_foreign_but_valid())
    damaged["metadata"].update(uid="u-secret", resourceVersion="7")
    fixed = copy.deepcopy(damaged)
    fixed["metadata"]["resourceVersion"] = "8"
    fixed["metadata"]["labels"] = {"app.kubernetes.io/managed-by": "iotsec"}  # iotsec's again: readable
    api = FixedMeanwhile(fixed)
    api.objects[("Secret", SECRET)] = damaged
    with caplog.at_level("WARNING", logger="iotsec.controllers.webhook_tls"):
        webhook_tls.ensure_webhook_tls(api, NOW)
    api.assert_the_api_server_trusts_the_served_certificate()  # the fixed Secret's CA is back in the bundle at once
    assert ("delete", "Secret") not in api.writes, "the fixed Secret is never deleted"
    assert api.secret_data()["ca.crt"] == secretdata.decode(fixed)["ca.crt"], "the fixed Secret's CA is the one used"
    assert any("changed after it was judged unreadable" in r.getMessage() for r in caplog.records)
    writes = len(api.writes)
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert len(api.writes) == writes, "settled: the next check has nothing to do"


def _annotated(secret: dict[str, Any]) -> dict[str, Any]:
    secret["metadata"]["annotations"] = {REPLACE_UNREADABLE: "true"}
    return secret


def test_the_replace_annotation_on_a_readable_secret_is_ignored_and_said_so(caplog):
    api = RecordingKube()
    webhook_tls.ensure_webhook_tls(api, NOW)
    before = _annotated(api.objects[("Secret", SECRET)])
    bundles = api.bundles()
    writes = len(api.writes)
    with caplog.at_level("WARNING", logger="iotsec.controllers.webhook_tls"):
        assert webhook_tls.ensure_webhook_tls(api, NOW) == []
        webhook_tls.ensure_webhook_tls(api, NOW)
    assert len(api.writes) == writes, "neither the Secret nor the bundle replaced"
    assert api.objects[("Secret", SECRET)] == before
    assert api.bundles() == bundles
    ((kind, type_, reason, message),) = api.events  # once per episode
    assert (kind, type_, reason) == (VWC, "Normal", webhook_tls.REPLACE_IGNORED)
    assert "is readable and iotsec's" in message
    assert sum("annotation is ignored" in r.getMessage() for r in caplog.records) == 1


def test_a_replacement_keeps_the_old_ca_the_api_server_trusts_until_the_webhook_reloads():
    api = RecordingKube()
    webhook_tls.ensure_webhook_tls(api, NOW)
    old = api.secret_data()
    damaged = dict(old, **{"tls.key": "garbage"})  # the CA certificate is still readable
    secret = tls_secret(NAMESPACE, SECRET, damaged)
    api.objects[("Secret", SECRET)] = _annotated(secret)
    webhook_tls.ensure_webhook_tls(api, NOW)
    new = api.secret_data()
    assert new["ca.crt"] != old["ca.crt"]
    assert new["previous-ca.crt"] == old["ca.crt"]
    (encoded,) = api.bundles()
    trusted = {certs.fingerprint(pem) for pem in certs.certs_in_bundle(base64.b64decode(encoded).decode())}
    assert trusted == {certs.fingerprint(new["ca.crt"]), certs.fingerprint(old["ca.crt"])}
    assert certs.verify_chain(old["tls.crt"], base64.b64decode(encoded).decode(), NOW), "the old certificate too"
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert api.bundles() == {encoded}, "kept on the next check"


def test_a_replacement_never_adds_a_ca_the_api_server_did_not_trust():
    api = RecordingKube()
    webhook_tls.ensure_webhook_tls(api, NOW)
    api.objects[("Secret", SECRET)] = _annotated(_foreign_but_valid())
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert "previous-ca.crt" not in api.secret_data()
    (encoded,) = api.bundles()
    assert len(certs.certs_in_bundle(base64.b64decode(encoded).decode())) == 1


# --- the SecurityDomains' workload kinds (issue 16) ------------------------------------------------------------


def _domain(name: str, kinds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": name},
        "spec": {"zone": "core", "namespaces": [name], "workloadKinds": kinds},
    }


WIDGET = {"group": "apps.example.com", "kind": "Widget", "resource": "widgets", "podSpecPaths": ["spec.template.spec"]}
ROLLOUT = {"group": "argoproj.io", "kind": "Rollout", "resource": "rollouts", "podSpecPaths": ["spec.template.spec"]}


def _hooks(api: RecordingKube) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in api.objects[(VWC, CONFIGURATION)]["webhooks"]}


def test_a_domains_workload_kinds_are_registered_and_unregistered_by_the_operator():
    api = RecordingKube()
    api.objects[("SecurityDomain", "field")] = _domain("field", [WIDGET, ROLLOUT])
    webhook_tls.ensure_webhook_tls(api, NOW)
    hooks = _hooks(api)
    added, workloads = hooks[webhook_tls.DOMAIN_KINDS_HOOK], hooks["workloads.iotsec.io"]
    # only what the workloads hook does not register already (Rollouts are in the built-in table)
    assert [(r["apiGroups"], r["resources"], r["scope"]) for r in added["rules"]] == [
        (["apps.example.com"], ["widgets"], "Namespaced")
    ]
    assert added["clientConfig"] == workloads["clientConfig"]  # the same server, with the same CA bundle
    assert added["clientConfig"]["caBundle"]
    for key in ("namespaceSelector", "failurePolicy", "timeoutSeconds", "sideEffects"):
        assert added[key] == workloads[key], key
    writes = len(api.writes)
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert len(api.writes) == writes, "nothing changed: nothing written"
    api.objects[("SecurityDomain", "field")] = _domain("field", [ROLLOUT])
    webhook_tls.ensure_webhook_tls(api, NOW)
    assert webhook_tls.DOMAIN_KINDS_HOOK not in _hooks(api)


async def test_a_domain_event_wakes_the_check(monkeypatch):
    wake = asyncio.Event()
    monkeypatch.setattr(webhook_tls, "_wake", wake)
    await webhook_tls.domains_changed(type="MODIFIED")
    assert wake.is_set()
