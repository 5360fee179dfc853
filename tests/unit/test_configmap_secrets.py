"""Passwords fed through ConfigMaps (issue 16): caught at admission of the ConfigMap and of the pod that takes its
environment from one, offline (`iotsec check`) and live (the webhook's review and its ConfigMap watch)."""

from __future__ import annotations

import asyncio
import copy
import time
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from iotsec.admission.configmaps import MAX_SCANNED_CHARS, config_map_secrets, summarise
from iotsec.admission.context import ConfigMapSummary, Snapshot
from iotsec.admission.engine import decide
from iotsec.admission.model import Finding
from iotsec.admission.snapshot import check, snapshot_from_objects
from iotsec.build import rbac
from iotsec.k8s.kube import ApiError
from iotsec.model.manifests import Document
from iotsec.servers.webhook.cluster import ClusterSnapshot
from iotsec.servers.webhook.review import review
from tests.unit.test_watch_cache import domain, namespace, scripted_cluster

NOW = datetime(2026, 12, 3, tzinfo=UTC)
CONTROL = "X1369-9.1.1.2-3"
ENV_FROM = "spec.template.spec.containers[0].envFrom[0].configMapRef"


def config_map(name: str, data: dict[str, str], ns: str | None = "plant") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def deployment(container: dict[str, Any], ns: str | None = "plant") -> dict[str, Any]:
    meta = {"name": "registry", **({"namespace": ns} if ns else {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "selector": {"matchLabels": {"app": "registry"}},
            "template": {
                "metadata": {"labels": {"app": "registry"}},
                "spec": {"containers": [{"name": "registry", "image": "eclipse/hono-registry:2.4.0", **container}]},
            },
        },
    }


SPRING = config_map(
    "registry-config",
    {
        "SPRING_DATASOURCE_URL": "jdbc:postgresql://timescale:5432/registry",
        "SPRING_DATASOURCE_USERNAME": "registry",
        "SPRING_DATASOURCE_PASSWORD": "Regi5try-db-pass",
        "SERVER_PORT": "8080",
    },
)
ORDINARY = config_map(
    "broker-settings",
    {
        "MQTT_BROKER_URL": "tcp://mosquitto:1883",
        "OAUTH2_TOKEN_URI": "https://keycloak.example.com/realms/iot/protocol/openid-connect/token",
        "TOKEN_EXPIRATION_SECONDS": "3600",
        "JWT_TOKEN_EXPIRATION_TIME": "9000",
        "PASSWORD_MIN_LENGTH": "12",
        "CONNECT_TIMEOUT": "30s",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9092",
        "application.properties": "server.port=8080\n"
        "spring.datasource.url=jdbc:postgresql://db/registry\n"
        "spring.datasource.password=${DB_PASSWORD}\n"
        "# spring.datasource.password=only-a-comment\n"
        "server.ssl.key-store-password=\n",
    },
)


def secret_violations(obj: dict[str, Any], snapshot: Snapshot, ns: str | None = "plant") -> list[Any]:
    decision = decide(obj, snapshot.context(ns, NOW))
    return [v for v in decision.violations if v.rule == "no-literal-secrets"]


def in_domain(*objects: dict[str, Any]) -> Snapshot:
    return snapshot_from_objects([domain("plant", ["plant"]), namespace("plant"), *objects])


def test_a_spring_config_map_and_the_deployment_taking_its_environment_are_both_denied():
    spring_app = deployment({"envFrom": [{"configMapRef": {"name": "registry-config"}}]})
    snapshot = in_domain(SPRING)

    (own,) = secret_violations(SPRING, snapshot)
    assert (own.control, own.path) == (CONTROL, "data[SPRING_DATASOURCE_PASSWORD]")
    assert own.fix == "move SPRING_DATASOURCE_PASSWORD to a Secret and reference it with secretKeyRef/secretRef"
    assert not decide(SPRING, snapshot.context("plant", NOW)).allowed

    (fed,) = secret_violations(spring_app, snapshot)
    assert (fed.control, fed.path) == (CONTROL, ENV_FROM)
    assert "ConfigMap registry-config feeds SPRING_DATASOURCE_PASSWORD as literal secrets" in fed.message
    assert "SPRING_DATASOURCE_URL" not in fed.message
    assert (
        fed.fix
        == "move SPRING_DATASOURCE_PASSWORD from ConfigMap registry-config to a Secret and use envFrom.secretRef"
    )
    assert not decide(spring_app, snapshot.context("plant", NOW)).allowed


def test_envfrom_names_the_variables_with_their_prefix_and_ignores_configmaps_it_does_not_know():
    prefixed = deployment({"envFrom": [{"configMapRef": {"name": "unknown"}}, {
        "configMapRef": {"name": "registry-config"}, "prefix": "HONO_"}]})  # fmt: skip
    (fed,) = secret_violations(prefixed, in_domain(SPRING))
    assert fed.path == "spec.template.spec.containers[0].envFrom[1].configMapRef"
    assert "HONO_SPRING_DATASOURCE_PASSWORD" in fed.message
    assert secret_violations(prefixed, in_domain()) == [], "a ConfigMap not known: its own admission judges it"


def test_iotsec_check_joins_helm_output_without_namespaces_and_says_so_for_both():
    objects = [config_map("registry-config", SPRING["data"], ns=None),
               deployment({"envFrom": [{"configMapRef": {"name": "registry-config"}}]}, ns=None)]  # fmt: skip
    report = check([Document("chart.yaml", i, obj) for i, obj in enumerate(objects)], NOW)
    paths = {c.document.obj["kind"]: {v.path for v in c.decision.violations if v.rule == "no-literal-secrets"}
             for c in report.checked}  # fmt: skip
    assert paths == {"ConfigMap": {"data[SPRING_DATASOURCE_PASSWORD]"}, "Deployment": {ENV_FROM}}


def test_config_map_key_refs_to_secret_names_are_denied_and_known_harmless_values_are_not():
    env = [
        {"name": "MQTT_PASSWORD", "valueFrom": {"configMapKeyRef": {"name": "elsewhere", "key": "mqtt"}}},
        {"name": "DB_CREDENTIAL", "valueFrom": {"configMapKeyRef": {"name": "registry-config", "key": "cred"}}},
        {"name": "DB", "valueFrom": {"configMapKeyRef": {"name": "registry-config", "key": "SPRING_DATASOURCE_PASSWORD"}}},
        {"name": "DB_URL", "valueFrom": {"configMapKeyRef": {"name": "registry-config", "key": "SPRING_DATASOURCE_URL"}}},
        {"name": "API_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "API_TOKEN"}}},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
    ]  # fmt: skip
    settings = config_map("settings", {"API_TOKEN": ""})  # known, and that key holds nothing secret
    found = secret_violations(deployment({"env": env}), in_domain(SPRING, settings))
    base = "spec.template.spec.containers[0].env"
    assert [v.path for v in found] == [f"{base}[{i}].valueFrom.configMapKeyRef" for i in (0, 1, 2)]
    assert found[0].message.startswith("MQTT_PASSWORD comes from ConfigMap elsewhere key mqtt")
    assert found[0].fix == "move mqtt from ConfigMap elsewhere to a Secret and use valueFrom.secretKeyRef"
    assert {v.control for v in found} == {CONTROL}


def test_a_config_map_of_ordinary_settings_is_admitted():
    snapshot = in_domain(ORDINARY)
    assert secret_violations(ORDINARY, snapshot) == []
    assert decide(ORDINARY, snapshot.context("plant", NOW)).allowed
    fed = deployment({"envFrom": [{"configMapRef": {"name": "broker-settings"}}], "env": [
        {"name": "PASSWORD_MIN_LENGTH", "valueFrom": {"configMapKeyRef": {"name": "broker-settings",
                                                                           "key": "PASSWORD_MIN_LENGTH"}}}]})  # fmt: skip
    assert secret_violations(fed, snapshot) == []
    assert summarise(ORDINARY) == ConfigMapSummary()


@pytest.mark.parametrize(
    ("filename", "text", "setting", "line"),
    [
        ("application.properties", "server.port=8080\nspring.datasource.password=hunter2-x\n",
         "spring.datasource.password", 2),
        ("application.yaml", "spring:\n  datasource:\n    url: jdbc:postgresql://db/r\n    password: 'hunter2-x'\n",
         "password", 4),
        ("tenant.yaml", "devices:\n  - id: sensor-1\n    auth:\n      - password: dev1ce-s3cret # demo\n",
         "password", 4),
        ("device.env", "# demo tenant\nexport DEVICE_PASSWORD=dev1ce-s3cret\nDEVICE_ID=4711\n", "DEVICE_PASSWORD", 2),
        ("broker.json", '{\n  "host": "mqtt",\n  "apiKey": "0123456789abcdef",\n  "port": 8883\n}\n', "apiKey", 3),
        ("influx.toml", '[auth]\ntoken = "my-influx-token-value"\n', "token", 2),
    ],
)  # fmt: skip
def test_secrets_set_in_configuration_files_are_found_by_line(filename: str, text: str, setting: str, line: int):
    found: list[Finding] = []
    config_map_secrets(config_map("files", {filename: text}), found)
    assert [(f.rule, f.path) for f in found] == [("no-literal-secrets", f"data[{filename}]")]
    assert f"sets {setting} (line {line}) in clear" in found[0].message
    assert found[0].fix.startswith(f"move {filename} into a Secret")
    assert summarise(config_map("files", {filename: text})) == ConfigMapSummary(), "a file is no env var"


# Configuration files as IoT platforms' charts put them in ConfigMaps (written here, modelled on public charts:
# Hono, Ditto, ThingsBoard, ChirpStack, EMQX, Mosquitto, InfluxDB/Telegraf, Grafana, Node-RED, Keycloak, MinIO).
SECRET_FILES = [
    ("application.properties", "spring.datasource.password=hono-secret"),
    ("application.yml", "spring:\n  datasource:\n    password: tb-postgres-pw"),
    ("grafana.ini", "[security]\nadmin_password = Gr4fana!"),
    ("influxdb.conf", '[http]\n  shared-secret = "abcdef0123456789"'),
    ("telegraf.conf", '[[outputs.influxdb_v2]]\n  token = "my-super-secret-auth-token"'),
    ("ditto.conf", 'ditto {\n  mongodb {\n    password = "ditto-mongo-pw"\n  }\n}'),
    ("tenant.json", '{\n  "tenant": "DEFAULT",\n  "password": "hono-secret"\n}'),
    ("credentials.yaml", '- auth-id: sensor1\n  type: hashed-password\n  secrets:\n    - pwd-plain: "hono-secret"'),
    ("emqx.conf", "dashboard.default_password = public123"),
    ("node-red.env", "export NODE_RED_CREDENTIAL_SECRET=a-long-random-string"),
    (".env", "MQTT_PASSWORD=mqtt-pass-1\nMQTT_USER=device"),
    (
        "kafka.properties",
        'sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="kafka-pw";',
    ),
    ("redis.conf-like.yaml", "redis:\n  auth:\n    password: r3dis-pw"),
    ("chirpstack.toml", '[postgresql]\ndsn="postgres://chirpstack:chirp-pw@postgres/chirpstack?sslmode=disable"'),
    ("keycloak.yaml", "clientSecret: 8f3b2a1c-4d5e-6f70-8192-a3b4c5d6e7f8"),
    ("thingsboard.yml", "security:\n  jwt:\n    tokenSigningKey: thingsboardDefaultSigningKey"),
    ("mongo.yaml", "mongodb:\n  uri: mongodb://ditto:mongo-pw@mongodb:27017/ditto"),
    ("app.ini", "[database]\nPASSWD = gitea-db-pw"),
    ("minio.env", "MINIO_ROOT_PASSWORD=minio-root-pw\nMINIO_ROOT_USER=admin"),
    ("aws.yaml", "aws:\n  secretAccessKey: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
]
ORDINARY_FILES = [
    (
        "application.properties",
        "spring.datasource.password=${DB_PASSWORD}\nspring.datasource.url=jdbc:postgresql://db/hono",
    ),
    ("application.yml", "spring:\n  datasource:\n    password: ${SPRING_DATASOURCE_PASSWORD}\n    username: tb"),
    ("grafana.ini", "[security]\nadmin_password = $__file{/etc/secrets/admin-password}"),
    ("mosquitto.conf", "password_file /mosquitto/config/passwd\nlistener 8883"),
    ("telegraf.conf", '[[outputs.influxdb_v2]]\n  token = "$INFLUX_TOKEN"'),
    ("ditto.conf", "ditto {\n  mongodb {\n    password = ${?MONGO_DB_PASSWORD}\n  }\n}"),
    (
        "hono.yaml",
        "hono:\n  auth:\n    validation:\n      certPath: /etc/hono/certs/auth-server-cert.pem\n    tokenExpiration: 3600",
    ),
    (
        "thingsboard.yml",
        'security:\n  jwt:\n    tokenExpirationTime: "${JWT_TOKEN_EXPIRATION_TIME:9000}"\n    refreshTokenExpTime: 604800',
    ),
    ("keycloak.yaml", "tokenUrl: https://keycloak/realms/iot/protocol/openid-connect/token\nclientId: dashboard"),
    ("emqx.conf", "authentication.password_hash_algorithm = sha256\nlistener.ssl.keyfile = /certs/key.pem"),
    ("influxdb.yaml", "auth:\n  tokenFile: /run/secrets/token\n  passwordMinLength: 12"),
    (
        "kafka.properties",
        "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\nssl.truststore.location=/certs/truststore.jks",
    ),
    ("app.ini", "[security]\nINSTALL_LOCK = true\nPASSWORD_COMPLEXITY = lower,upper,digit\nMIN_PASSWORD_LENGTH = 12"),
    ("node-red.json", '{\n  "credentialSecret": false,\n  "uiPort": 1880\n}'),
    ("chirpstack.toml", '[api]\nsecret="{{ .Values.api.secret }}"\nbind="0.0.0.0:8080"'),
    ("vault.hcl", 'auth_method "kubernetes" {\n  token_path = "/var/run/secrets/token"\n}'),
    ("oauth.yaml", "oauth2:\n  tokenUri: https://auth.example.com/oauth/token\n  tokenValiditySeconds: 3600"),
    ("nginx.conf.yaml", "rateLimit:\n  tokenBucket: 100\n  burst: 20"),
    ("minio.env", "MINIO_ROOT_PASSWORD_FILE=/run/secrets/minio\nMINIO_BROWSER=on"),
    (
        "redis.yaml",
        "redis:\n  auth:\n    enabled: true\n    existingSecret: redis-auth\n    existingSecretPasswordKey: password",
    ),
]


@pytest.mark.parametrize(("filename", "text"), SECRET_FILES, ids=[f"secret-{n}" for n, _ in SECRET_FILES])
def test_each_secret_setting_of_the_corpus_is_found(filename: str, text: str):
    found: list[Finding] = []
    config_map_secrets(config_map("files", {filename: text + "\n"}), found)
    assert [f.path for f in found] == [f"data[{filename}]"]


@pytest.mark.parametrize(("filename", "text"), ORDINARY_FILES, ids=[f"ordinary-{n}" for n, _ in ORDINARY_FILES])
def test_no_ordinary_setting_of_the_corpus_is_flagged(filename: str, text: str):
    found: list[Finding] = []
    config_map_secrets(config_map("files", {filename: text + "\n"}), found)
    assert found == []


def test_references_comments_and_empty_values_in_files_are_not_secrets():
    text = (
        "spring.datasource.password=${DB_PASSWORD}\n"
        "# spring.datasource.password=example-only\n"
        "; password = example-only\n"
        "password:\n"
        "token: |\n"
        "secretFile: /etc/secrets/token\n"
    )
    found: list[Finding] = []
    config_map_secrets(config_map("files", {"app.conf": text}), found)
    assert found == []


def test_the_summary_holds_key_names_only():
    summary = summarise(SPRING)
    assert summary == ConfigMapSummary(("SPRING_DATASOURCE_PASSWORD",))
    assert "Regi5try-db-pass" not in repr(summary)


def admission_review(obj: dict[str, Any], resource: str) -> bytes:
    group, _, version = obj["apiVersion"].rpartition("/")
    request = {
        "uid": "u-1",
        "kind": {"group": group, "version": version, "kind": obj["kind"]},
        "resource": {"group": group, "version": version, "resource": resource},
        "namespace": "plant",
        "operation": "CREATE",
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj,
    }
    return orjson.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})


def test_the_webhook_denies_the_pod_from_the_snapshot_summary_and_the_config_map_from_its_data():
    snapshot = snapshot_from_objects([domain("plant", ["plant"]), namespace("plant")])
    snapshot.config_maps = {("plant", "registry-config"): ConfigMapSummary(("SPRING_DATASOURCE_PASSWORD",))}
    app = deployment({"envFrom": [{"configMapRef": {"name": "registry-config"}}]}, ns=None)  # filled by review
    result = review(admission_review(app, "deployments"), snapshot, lambda: NOW)
    assert result.body["response"]["allowed"] is False
    assert result.decision is not None
    assert [v.path for v in result.decision.violations if v.rule == "no-literal-secrets"] == [ENV_FROM]
    message = result.body["response"]["status"]["message"]
    assert f"[{CONTROL} no-literal-secrets]" in message
    assert "SPRING_DATASOURCE_PASSWORD from ConfigMap registry-config" in message

    result = review(admission_review(SPRING, "configmaps"), snapshot, lambda: NOW)
    assert result.body["response"]["allowed"] is False
    assert result.decision is not None
    assert [v.path for v in result.decision.violations] == ["data[SPRING_DATASOURCE_PASSWORD]"]
    assert f"[{CONTROL} no-literal-secrets]" in result.body["response"]["status"]["message"]


def test_the_cluster_snapshot_keeps_config_map_summaries_current_from_its_watch():
    kube = scripted_cluster(SecurityDomain=[domain("plant", ["plant"])], Namespace=[namespace("plant")])
    kube.lists["ConfigMap"] = [[SPRING, ORDINARY]]
    later = config_map("tenant-demo", {"DEVICE_PASSWORD": "dev1ce-s3cret"})
    fixed = copy.deepcopy(SPRING)
    fixed["data"].pop("SPRING_DATASOURCE_PASSWORD")
    kube.watches["ConfigMap"] = [[("ADDED", later), ("MODIFIED", fixed)]]
    source = ClusterSnapshot(kube)  # type: ignore[arg-type]

    def caught_up() -> bool:
        held = source.current.config_maps if source.current is not None else {}
        return held.get(("plant", "tenant-demo")) == ConfigMapSummary(("DEVICE_PASSWORD",)) and held.get(
            ("plant", "registry-config")
        ) == ConfigMapSummary(())

    async def scenario() -> None:
        task = asyncio.create_task(source.run())
        for _ in range(400):
            if caught_up():
                break
            await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        kube.release.set()
    assert caught_up(), "the snapshot follows ConfigMap events"
    assert source.current is not None
    assert set(source.current.config_maps) == {
        ("plant", n) for n in ("registry-config", "broker-settings", "tenant-demo")
    }
    held = repr(source.config_maps.items())
    assert "dev1ce-s3cret" not in held, "only key names are kept, never values"
    assert "jdbc:postgresql" not in held
    demo = deployment({"envFrom": [{"configMapRef": {"name": "tenant-demo"}}]})
    (fed,) = secret_violations(demo, source.current)
    assert "DEVICE_PASSWORD" in fed.message


def test_a_webhook_that_may_not_list_config_maps_still_serves():
    kube = scripted_cluster(SecurityDomain=[domain("plant", ["plant"])], Namespace=[namespace("plant")])
    kube.lists["ConfigMap"] = [ApiError("configmaps is forbidden", 403)]
    source = ClusterSnapshot(kube)  # type: ignore[arg-type]

    async def scenario() -> None:
        task = asyncio.create_task(source.run())
        for _ in range(400):
            if source.current is not None:
                break
            await asyncio.sleep(0.01)
        task.cancel()

    try:
        asyncio.run(scenario())
    finally:
        kube.release.set()
    assert source.current is not None, "ready without ConfigMaps: failurePolicy Fail must not stop the cluster"
    assert dict(source.current.config_maps) == {}
    assert decide(SPRING, source.current.context("plant", NOW)).allowed is False, "the ConfigMap's own check holds"


def test_the_webhook_may_list_and_watch_config_maps_and_nothing_more():
    grants = [p for p in rbac.WEBHOOK if "configmaps" in p.resources]
    assert [(p.api_groups, p.verbs) for p in grants] == [(("",), ("list", "watch"))]


# -- attacks: size and shape bounded -------------------------------------------------------------------------------


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def test_a_10_mb_value_and_a_deeply_nested_file_are_read_in_bounded_time():
    huge_line = config_map("huge", {"DB_PASSWORD": "x" * 10_000_000, "blob": "a=" + "b" * 10_000_000})
    huge_file = config_map("huge", {"app.properties": "k=v\n" * 2_500_000 + "password=late-secret\n"})
    block = "".join(f"{' ' * depth}level{depth}:\n" for depth in range(500)) + "password: deep-secret\n"
    flow = "values: " + "{a: " * 100_000 + "password: deep-secret" + "}" * 100_000 + "\n"
    deep = config_map("deep", {"block.yaml": block, "flow.yaml": flow, "doc.json": "[" * 5_000_000 + "]" * 5_000_000})
    for obj in (huge_line, huge_file, deep):
        found: list[Finding] = []
        assert timed(lambda obj=obj, found=found: (config_map_secrets(obj, found), summarise(obj))) < 2.0
        assert all(len(f.message) < 256 for f in found)
    found = []
    config_map_secrets(deep, found)
    assert [(f.path, "password (line 501)" in f.message) for f in found] == [("data[block.yaml]", True)]
    found = []
    config_map_secrets(huge_file, found)
    assert found == [], f"only the first {MAX_SCANNED_CHARS} characters of a file are read (documented)"
    found = []
    config_map_secrets(huge_line, found)
    assert [f.path for f in found] == ["data[DB_PASSWORD]"]


# -- every pod-bearing kind, and object checks by API group ----------------------------------------------------


def test_a_rollout_taking_its_environment_from_a_secret_bearing_config_map_is_denied():
    rollout = deployment({"envFrom": [{"configMapRef": {"name": "registry-config"}}]})
    rollout.update(apiVersion="argoproj.io/v1alpha1", kind="Rollout")
    (fed,) = secret_violations(rollout, in_domain(SPRING))
    assert fed.path == ENV_FROM


def test_object_checks_go_by_api_group_and_pod_checks_by_the_pod_table():
    knative = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": "ingest", "namespace": "plant"},
        "spec": {"type": "NodePort", "template": {"spec": {"containers": [{"image": "ingest:1.0", "envFrom": [
            {"configMapRef": {"name": "registry-config"}}]}]}}},
    }  # fmt: skip
    snapshot = in_domain(SPRING)
    rules = {v.rule: v.path for v in decide(knative, snapshot.context("plant", NOW)).violations}
    assert "exposure-zone" not in rules, "a Knative Service exposes nothing the way a core Service does"
    assert rules["no-literal-secrets"] == "spec.template.spec.containers[0].envFrom[0].configMapRef"
    core = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ingest", "namespace": "plant"},
            "spec": {"type": "NodePort"}}  # fmt: skip
    assert "exposure-zone" in {v.rule for v in decide(core, snapshot.context("plant", NOW)).violations}
    claims = {"volumeClaimTemplates": [{"metadata": {"name": "data", "labels": {"iotsec.io/data-class": "secret"}}}]}
    for api_version in ("apps/v1", "apps.kruise.io/v1beta1"):
        stateful = deployment({})
        stateful.update(apiVersion=api_version, kind="StatefulSet")
        stateful["spec"].update(claims)
        violations = decide(stateful, snapshot.context("plant", NOW)).violations
        assert "encrypted-storage" in {v.rule for v in violations}, api_version


def test_a_url_or_options_from_an_unknown_config_map_is_not_taken_for_a_secret():
    """Without the ConfigMap's value only a name that says "secret" by itself counts: DATABASE_URL or JAVA_OPTS
    may carry one, but nothing shows that this one does."""
    env = [
        {"name": "DATABASE_URL", "valueFrom": {"configMapKeyRef": {"name": "unknown", "key": "DATABASE_URL"}}},
        {"name": "JAVA_OPTS", "valueFrom": {"configMapKeyRef": {"name": "unknown", "key": "opts"}}},
        {"name": "BROKER_PASSWORD", "valueFrom": {"configMapKeyRef": {"name": "unknown", "key": "pw"}}},
    ]  # fmt: skip
    found = secret_violations(deployment({"env": env}), in_domain(SPRING))
    assert [v.path for v in found] == ["spec.template.spec.containers[0].env[2].valueFrom.configMapKeyRef"]


def test_a_value_with_a_trailing_line_end_is_one_value_at_both_ends():
    """`MQTT_PASSWORD: |` in YAML gives `Hunter2pass\n`: one value, not a file of one line that sets nothing."""
    block = config_map("mqtt", {"MQTT_PASSWORD": "Hunter2pass\n", "MQTT_USER": "gateway\n", "NOTE": "a\nb\n"})
    snapshot = in_domain(block)
    assert [v.path for v in secret_violations(block, snapshot)] == ["data[MQTT_PASSWORD]"]
    assert summarise(block) == ConfigMapSummary(("MQTT_PASSWORD",))
    fed = deployment({"envFrom": [{"configMapRef": {"name": "mqtt"}}]})
    assert [v.path for v in secret_violations(fed, snapshot)] == [ENV_FROM]


PLACEHOLDER_DEFAULTS = [
    ("application.properties", "server.port=8080\nspring.datasource.password=${DB_PASS:Hunter2pass}"),
    ("application.yaml", "spring:\n  datasource:\n    password: ${DB_PASS:Hunter2pass}"),
    ("application.properties", "quarkus.datasource.password=${DB_PWD_ENV:Hunter2pass}"),
    (".env", "A=1\nMQTT_PASSWORD=${MQTT_PW:-Hunter2pass}"),
    (".env", "A=1\nMQTT_PASSWORD=${MQTT_PW-Hunter2pass}"),
]


@pytest.mark.parametrize(("filename", "text"), PLACEHOLDER_DEFAULTS)
def test_a_placeholder_falling_back_to_a_literal_in_a_file_is_a_secret(filename: str, text: str):
    found: list[Finding] = []
    config_map_secrets(config_map("files", {filename: text + "\n"}), found)
    assert [f.path for f in found] == [f"data[{filename}]"]


def test_a_key_set_to_a_placeholder_with_a_literal_default_is_a_secret_and_feeds_envfrom():
    fallback = config_map("registry", {"SPRING_DATASOURCE_PASSWORD": "${X:Hunter2pass}", "DB_PASS": "${DB_PASS}"})
    assert [v.path for v in secret_violations(fallback, in_domain(fallback))] == ["data[SPRING_DATASOURCE_PASSWORD]"]
    assert summarise(fallback) == ConfigMapSummary(("SPRING_DATASOURCE_PASSWORD",))


SPACED_FILES = [
    (
        "mosquitto.conf",
        "listener 8883\nconnection cloud\naddress hub.example.com:8883\nremote_username gw01\n"
        "remote_password Hunter2pass",
        "remote_password (line 5)",
    ),
    ("app.properties", "a=1\nspring.datasource.password Hunter2pass", "spring.datasource.password (line 2)"),
    ("app.properties", "a=1\nspring.datasource.password:Hunter2pass", "spring.datasource.password (line 2)"),
    ("mosquitto.conf", "connection cloud\nbridge_psk 2b7e151628aed2a6abf7158809cf4f3c", "bridge_psk (line 2)"),
    ("redis.conf", "port 6379\nrequirepass Hunter2pass", "requirepass (line 2)"),
    ("redis.conf", "replicaof redis-0 6379\nmasterauth Hunter2pass", "masterauth (line 2)"),
]


@pytest.mark.parametrize(("filename", "text", "setting"), SPACED_FILES)
def test_settings_separated_by_whitespace_or_a_bare_colon_are_read(filename: str, text: str, setting: str):
    found: list[Finding] = []
    config_map_secrets(config_map("files", {filename: text + "\n"}), found)
    assert [f.path for f in found] == [f"data[{filename}]"]
    assert setting in found[0].message


def test_whitespace_settings_count_only_under_names_that_say_secret():
    text = (
        "listener 8883\n"
        "password_file /mosquitto/config/passwd\n"
        "psk_hint gateway-fleet\n"
        "psk_file /mosquitto/config/psk\n"
        "keyfile /mosquitto/certs/server.key\n"
        "address broker.example.com:8883\n"
        "remote_password\n"
        "Password must be set by the operator\n"
        "auth_plugin_opt_password_file /etc/mosquitto/pw\n"
    )
    found: list[Finding] = []
    config_map_secrets(config_map("files", {"mosquitto.conf": text}), found)
    assert found == []


EMBEDDED_FILES = [
    ("settings", '{"mqtt":{"user":"a","password":"Hunter2pass"}}', "password (line 1)"),
    ("config.json", '{"mqtt":{"user":"a","password":"Hunter2pass"}}', "password (line 1)"),
    ("app.yaml", "{mqtt: {password: Hunter2pass}}", "password (line 1)"),
    ("config.json", '{"a":1,"password":"Hunter2pass"}\n', "password (line 1)"),
    ("app.yaml", "mqtt: {user: a, password: Hunter2pass}\nx: 1\n", "password (line 1)"),
    (
        "settings.js",
        "module.exports = {\n  adminAuth: {users: [{username: 'admin', password: 'Hunter2pass'}]},\n}\n",
        "password (line 2)",
    ),
]


@pytest.mark.parametrize(("filename", "text", "setting"), EMBEDDED_FILES)
def test_credentials_inside_json_one_liners_and_flow_mappings_are_found(filename: str, text: str, setting: str):
    found: list[Finding] = []
    config_map_secrets(config_map("files", {filename: text}), found)
    assert [f.path for f in found] == [f"data[{filename}]"]
    assert setting in found[0].message


def test_kafka_class_names_and_environment_reads_in_files_are_not_secrets():
    files = {
        "application.properties": "spring.kafka.bootstrap-servers=kafka:9092\n"
        "spring.kafka.producer.key-serializer=org.apache.kafka.common.serialization.StringSerializer\n"
        "spring.kafka.consumer.key-deserializer=org.apache.kafka.common.serialization.StringDeserializer\n",
        "connect.properties": "key.converter=org.apache.kafka.connect.json.JsonConverter\n"
        "key.converter.schemas.enable=false\ndefault.key.serde=org.apache.kafka.common.serialization.Serdes$StringSerde\n",
        "settings.js": "module.exports = {\n    flowFile: 'flows.json',\n"
        "    credentialSecret: process.env.NODE_RED_CREDENTIAL_SECRET,\n"
        '    httpNodeAuth: {user: "user", pass: process.env.NODE_RED_HTTP_PASSWORD_HASH},\n}\n',
        "settings.py": "SECRET_KEY = os.environ['DJANGO_SECRET_KEY']\nDB_PASSWORD = os.getenv('DB_PASSWORD')\n",
        "CONNECT_KEY_CONVERTER": "org.apache.kafka.connect.storage.StringConverter",
        "ROUTING_KEY": "telemetry.Sensors.Temperature",
        "app.json": '{"datasource": {"url": "jdbc:postgresql://db/app", "password": "${DB_PASSWORD}"}}',
    }
    found: list[Finding] = []
    config_map_secrets(config_map("files", files), found)
    assert found == []


def test_a_key_ref_to_a_value_embedding_a_credential_is_denied_whatever_the_names():
    settings = config_map("gateway", {"APP_CONFIG": '{"mqtt": {"user": "gw", "password": "Hunter2pass"}}'})
    snapshot = in_domain(settings)
    (own,) = secret_violations(settings, snapshot)
    assert "APP_CONFIG sets password (line 1)" in own.message
    ref = {"name": "SETTINGS", "valueFrom": {"configMapKeyRef": {"name": "gateway", "key": "APP_CONFIG"}}}
    assert [v.path for v in secret_violations(deployment({"env": [ref]}), snapshot)] == [
        "spec.template.spec.containers[0].env[0].valueFrom.configMapKeyRef"
    ]
