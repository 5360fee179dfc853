"""The literal-secret decision (no-literal-secrets) on real environment variables, and its edge cases.

The corpus (tests/data/env_names.yaml) holds variables as public charts, manifests and documented defaults use them;
the not-secret side is mostly names that contain password/secret/token/key and are not secrets. Figures:
`PYTHONPATH=operator .venv/bin/python benchmarks/secret_names.py`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotsec.admission.engine import decide
from iotsec.admission.secrets import (
    literal_secret,
    name_kind,
    names_a_secret,
    secret_flag,
    secret_name,
    secret_value,
)

CORPUS = Path(__file__).resolve().parent.parent / "data" / "env_names.yaml"
REQUIRED = 0.95
FRESH_FROM = 233  # entries gathered after the decision was written (benchmarks/secret_names.py says the same)


def corpus() -> list[dict[str, Any]]:
    return yaml.safe_load(CORPUS.read_text())


def decided(name: str, value: object) -> bool:
    """As admission decides an env var: the name gates, then name and value decide."""
    return secret_name(name) and literal_secret(name, value)


def precision_recall(entries: list[dict[str, Any]]) -> tuple[float, float]:
    flagged = [entry for entry in entries if decided(entry["name"], entry["value"])]
    true_pos = sum(entry["secret"] for entry in flagged)
    secrets = sum(entry["secret"] for entry in entries)
    return true_pos / len(flagged), true_pos / secrets


def test_the_corpus_is_large_enough_and_every_entry_says_where_it_was_seen():
    entries = corpus()
    assert sum(entry["secret"] for entry in entries) >= 100
    assert sum(not entry["secret"] for entry in entries) >= 100
    for entry in entries:
        assert set(entry) == {"name", "value", "secret", "source"}, entry
        assert isinstance(entry["value"], str), entry
        assert isinstance(entry["secret"], bool), entry
        assert entry["source"], entry


def test_precision_and_recall_on_the_whole_corpus():
    precision, recall = precision_recall(corpus())
    assert precision >= REQUIRED, f"precision {precision:.3f}"
    assert recall >= REQUIRED, f"recall {recall:.3f}"


def test_precision_and_recall_on_the_held_out_part():
    held_out = [entry for index, entry in enumerate(corpus()) if index % 3 == 2]
    precision, recall = precision_recall(held_out)
    assert precision >= REQUIRED, f"precision {precision:.3f}"
    assert recall >= REQUIRED, f"recall {recall:.3f}"


def test_precision_and_recall_on_the_part_gathered_after_the_decision_was_written():
    precision, recall = precision_recall(corpus()[FRESH_FROM:])
    assert precision >= REQUIRED, f"precision {precision:.3f}"
    assert recall >= REQUIRED, f"recall {recall:.3f}"


def test_an_access_key_alone_is_the_identifier_half_and_a_public_key_no_secret():
    assert not literal_secret("MINIO_ACCESS_KEY", "minioadmin")
    assert literal_secret("AWS_SECRET_ACCESS_KEY", "YOUR_SECRET")
    assert literal_secret("S3_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"), "key material all the same"
    assert not literal_secret("JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n")
    assert literal_secret("NEXT_PUBLIC_JWT_SECRET", "dev-secret"), "exposed to the browser, still a literal secret"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://app:Pg-s3cret@db:5432/app"),
        ("REDIS_URL", "redis://:s3cretRedis@redis-master:6379/0"),
        ("MONGODB_URI", "mongodb+srv://app:Xk29dLq7@cluster0.example.net/app"),
        ("MQTT_BROKER", "mqtts://device-7:dev1ce-pw@broker.example.com:8883"),
        ("DATABASE_URL", "postgres://app:%40t-sign-first@db:5432/app"),
        ("SPRING_DATASOURCE_URL", "jdbc:postgresql://db:5432/app?user=app&password=Pg4pp!2024"),
        ("JAVA_OPTS", "-Xmx512m -Dspring.datasource.password=12345"),
        ("SPRING_APPLICATION_JSON", '{"db.password":"test2"}'),
        ("KAFKA_SASL_JAAS_CONFIG", 'PlainLoginModule required username="admin" password="admin";'),
        ("AZURE_STORAGE_CONNECTION_STRING", "DefaultEndpointsProtocol=https;AccountName=iot;AccountKey=bXlrZXk=;"),
    ],
)
def test_credentials_inside_connection_strings_and_options_are_caught(name: str, value: str):
    assert decided(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "postgres://app:$(DB_PASSWORD)@db:5432/app"),
        ("DATABASE_URL", "postgres://$PGUSER:$PGPASSWORD@db:5432/app"),
        ("DATABASE_URL", "postgres://app@db:5432/app"),
        ("DATABASE_URL", "postgres://app:%s@db:5432/app"),
        ("SPRING_DATASOURCE_URL", "jdbc:postgresql://db:5432/app"),
        ("JAVA_OPTS", "-Xmx512m -Dspring.datasource.password=${DB_PASSWORD}"),
        ("MQTT_BROKER_URL", "tcp://mosquitto:1883"),
    ],
)
def test_connection_strings_without_a_literal_password_are_not(name: str, value: str):
    assert not decided(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JWT_TOKEN_EXPIRATION_TIME", "9000"),
        ("ACCESS_TOKEN_TTL", "15m"),
        ("TTL_TOKEN", "86400000"),
        ("OAUTH2_TOKEN_URI", "https://oauth2.googleapis.com/token"),
        ("TOKEN_ENDPOINT", "https://keycloak.example.com/realms/iot/protocol/openid-connect/token"),
        ("PASSWORD_MIN_LENGTH", "12"),
        ("PASSWORD_COMPLEXITY", "lower,upper,digit"),
        ("SECRET_NAME", "my-secret"),
        ("DB_PASSWORD_SECRET_REF", "postgres-credentials"),
        ("EXISTING_SECRET", "postgres-credentials"),
        ("API_KEY_HEADER", "X-Api-Key"),
        ("TOKEN_TYPE", "Bearer"),
        ("KEYCLOAK_CLIENT_SECRET_FILE", "/run/secrets/keycloak-client"),
        ("SSL_KEY_STORE_TYPE", "PKCS12"),
        ("SSL_PEM_KEY", "server_key.pem"),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("STRIPE_PUBLISHABLE_KEY", "pk_live_51HxQzK2eZvKYlo2CkLmNoPqRsTuV"),
        ("ALLOW_EMPTY_PASSWORD", "yes"),
        ("CASSANDRA_USE_CREDENTIALS", "false"),
        ("NODE_RED_ADMIN_PASS_HASH", "$2b$08$8OsVQxTRlSNS0eQz2mYKe.OSSBqQ6cI9GcZbG8QZR8z5MfG6Cv1xa"),
        ("POSTGRESQL_PASSWORD_ENCRYPTION", "scram-sha-256"),
        ("GF_SECURITY_ADMIN_PASSWORD", "{{ .Values.grafana.adminPassword }}"),
        ("REDIS_PASSWORD", ""),
        ("jwtTokenExpirationTime", "9000"),
        ("spring.datasource.password", "${DB_PASSWORD}"),
    ],
)
def test_names_about_a_secret_and_values_that_point_to_one_are_not_secrets(name: str, value: str):
    assert not decided(name, value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MQTT_PASS", "Xr7!pQ2m"),
        ("DB_PWD", "hunter22"),
        ("PGPASSWORD", "Zx81-pgAdmin"),
        ("INFLUXDB_ADMIN_PASSWORD", "123456"),
        ("JWT_TOKEN_SIGNING_KEY", "thingsboardDefaultSigningKey"),
        ("SECRET_KEY_BASE", "01234567890ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
        ("RABBITMQ_ERLANG_COOKIE", "SWQOKODSQALRPCLNMEQG"),
        ("NETWORK_KEY", "0x5A,0x1F,0x3C,0x9D,0x7E,0x2B,0x4A,0x6C,0x8D,0x0E,0x1A,0x3B,0x5C,0x7D,0x9E,0x0F"),
        (
            "TLS_KEY",
            "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIrYSSNQFaA2Hwf1duRSxKtLYX5CB04fSeQ6tF1aY/PuoAoGCCqGSM49\n",
        ),
        ("adminPassword", "changeme"),
        ("EXTRA_HEADER", "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXZpY2UtNyJ9.c2lnbmF0dXJl"),
        ("PAYMENTS", "sk_live_51HxQzK2eZvKYlo2C0aBcDeFgHiJ"),
    ],
)
def test_secrets_in_real_shapes_and_under_unusual_names_are_caught(name: str, value: str):
    assert literal_secret(name, value)


def test_bare_key_names_need_key_material():
    assert name_kind("TLS_KEY") == "key"
    assert not literal_secret("PARTITION_KEY", "deviceId")
    assert not literal_secret("SECURITY_OAUTH2_GITHUB_MAPPER_EMAIL_URL_KEY", "https://api.github.com/user/emails")
    assert literal_secret("LORA_DEV_KEY", "8F3A1C9E7B2D4F6A0C5E8B1D3F7A9C2E")


def test_names_are_read_as_words_whatever_their_style():
    assert name_kind("SPRING_DATASOURCE_PASSWORD") == "secret"
    assert name_kind("spring.datasource.password") == "secret"
    assert name_kind("apiKey") == "secret"
    assert name_kind("GF_SECURITY_ADMIN_PASSWORD__FILE") == "about"
    assert name_kind("DATABASE_URL") == "carrier"
    assert name_kind("LOG_LEVEL") == "none"
    assert not secret_name("TOKENIZERS_PARALLELISM") or not literal_secret("TOKENIZERS_PARALLELISM", "false")


@pytest.mark.parametrize(
    ("name", "says_secret", "may_carry"),
    [
        ("MQTT_PASSWORD", True, True),
        ("API_KEY", True, True),
        ("RABBITMQ_ERLANG_COOKIE", True, True),
        ("DATABASE_URL", False, True),
        ("JAVA_OPTS", False, True),
        ("TLS_KEY", False, True),
        ("PASSWORD_MIN_LENGTH", False, False),
        ("TOKEN_TTL", False, False),
        ("SESSION_COOKIE_SECURE", False, False),
        ("KEYCLOAK_CLIENT_SECRET_FILE", False, False),
        ("LOG_LEVEL", False, False),
    ],
)
def test_the_gate_passes_names_that_may_carry_a_secret_and_names_a_secret_only_those_that_say_so(
    name: str, says_secret: bool, may_carry: bool
):
    assert names_a_secret(name) is says_secret
    assert secret_name(name) is may_carry


def test_secret_value_keeps_its_meaning_for_callers():
    assert secret_value("hunter22")
    assert not secret_value("/etc/secrets/pw")
    assert not secret_value("$(SECRET_FROM_ENV)")
    assert not secret_value("true")
    assert not secret_value(None)


@pytest.mark.parametrize(
    ("argument", "flag"),
    [
        ("--db-password=hunter2", "db-password"),
        ("--database-url=postgres://app:pw-123@db/app", "database-url"),
        ("-Dspring.datasource.password=12345", "Dspring.datasource.password"),
        ("--token-ttl=1h", None),
        ("--password-file=/etc/secrets/pw", None),
        ("--oauth2-token-uri=https://auth.example.com/token", None),
        ("--tls-key=/etc/tls/tls.key", None),
        ("--password", None),
        ("password=hunter2", None),
    ],
)
def test_flags_are_decided_like_variables(argument: str, flag: str | None):
    assert secret_flag(argument) == flag


@pytest.mark.parametrize(
    "value",
    [
        "eyJ" * 300_000,
        "://" * 300_000,
        "key:" * 250_000,
        "password=" * 100_000,
        "1m" * 500_000,
        "a@:" * 300_000,
        '{"password' * 100_000,
        ',"' + "k" * 99 + " :" * 500_000,
        "${A:" * 250_000 + "}" * 250_000,
    ],
)
def test_a_megabyte_of_adversarial_value_is_decided_quickly(value: str):
    started = time.perf_counter()
    for name in ("MQTT_PASSWORD", "TLS_KEY", "DATABASE_URL", "PASSWORD_FILE", "LOG_LEVEL"):
        literal_secret(name, value)
    assert time.perf_counter() - started < 0.5


def env_findings(env: list[dict[str, str]], args: list[str] | None = None) -> list[str]:
    """no-literal-secrets paths the admission engine reports for a conforming pod with this environment."""
    from tests.unit.test_policy import ctx, with_container

    obj = with_container(env=env, **({"args": args} if args else {}))
    return [v.path for v in decide(obj, ctx()).violations if v.rule == "no-literal-secrets"]


def test_the_admission_engine_applies_the_decision_to_env_and_args():
    env = [
        {"name": "JWT_TOKEN_EXPIRATION_TIME", "value": "9000"},
        {"name": "OAUTH2_TOKEN_URI", "value": "https://keycloak.example.com/realms/iot/protocol/openid-connect/token"},
        {"name": "PASSWORD_MIN_LENGTH", "value": "12"},
        {"name": "DATABASE_URL", "value": "postgres://registry:Regi5try-pw@timescale:5432/registry"},
        {"name": "MQTT_PASS", "value": "Xr7!pQ2m"},
    ]
    args = ["--token-ttl=1h", "--database-url=postgres://app:pw-123@db/app"]
    assert sorted(env_findings(env, args)) == [
        "spec.containers[0].args[1]",
        "spec.containers[0].env[3].value",
        "spec.containers[0].env[4].value",
    ]


@pytest.mark.parametrize(
    ("name", "value", "secret"),
    [
        ("SPRING_DATASOURCE_PASSWORD", "${DB_PASS:Hunter2pass}", True),  # Spring: the default when DB_PASS is unset
        ("spring.datasource.password", "${DB_CRED:Hunter2pass}", True),
        ("quarkus.datasource.password", "${DB_PWD_ENV:Hunter2pass}", True),
        ("MQTT_PASSWORD", "${MQTT_PW:-Hunter2pass}", True),  # shell and compose
        ("MQTT_PASSWORD", "${MQTT_PW-Hunter2pass}", True),
        ("MQTT_PASSWORD", "${MQTT_PW:=Hunter2pass}", True),
        ("DB_PASSWORD", "${A:${B:Hunter2pass}}", True),
        ("SPRING_APPLICATION_JSON", '{"db": {"password": "${DB_PASS:Hunter2pass}"}}', True),
        ("DB_PASSWORD", "${DB_PASS}", False),
        ("DB_PASSWORD", "${DB_PASS:}", False),
        ("DB_PASSWORD", "${DB_PASS:?DB_PASS must be set}", False),
        ("DB_PASSWORD", "${A:${B}}", False),
        ("spring.datasource.password", "${DB_PASSWORD:#{null}}", False),  # a SpEL expression, not a literal
        ("JWT_TOKEN_EXPIRATION_TIME", "${JWT_TOKEN_EXPIRATION_TIME:9000}", False),
        ("SPRING_DATASOURCE_URL", "jdbc:mysql://${MYSQL_HOST:localhost}:3306/app", False),
    ],
)
def test_a_placeholder_with_a_literal_default_is_judged_by_its_default(name: str, value: str, secret: bool):
    assert decided(name, value) is secret


def test_a_deployment_env_value_with_a_literal_default_is_denied():
    env = [
        {"name": "SPRING_DATASOURCE_PASSWORD", "value": "${DB_PASS:Hunter2pass}"},
        {"name": "MQTT_PASSWORD", "value": "${MQTT_PASSWORD}"},
    ]
    assert env_findings(env) == ["spec.containers[0].env[0].value"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECT_KEY_CONVERTER", "org.apache.kafka.connect.storage.StringConverter"),
        ("KEY_CONVERTER", "org.apache.kafka.connect.json.JsonConverter"),
        ("key.converter", "org.apache.kafka.connect.json.JsonConverter"),
        ("SPRING_KAFKA_PRODUCER_KEY_SERIALIZER", "org.apache.kafka.common.serialization.StringSerializer"),
        ("spring.kafka.consumer.key-deserializer", "org.apache.kafka.common.serialization.StringDeserializer"),
        ("KEY_SERDE", "org.apache.kafka.common.serialization.StringSerde"),
        ("KAFKA_KEY_CLASS", "com.example.iot.telemetry.DeviceKeyClass"),
        ("ROUTING_KEY", "telemetry.Sensors.Temperature"),
        ("CACHE_KEY", "DeviceRegistryCacheKey01"),
        ("MESSAGE_KEY", "DeviceIdWithTenantPrefix"),
        ("TLS_KEY", "org.example.iot.GatewayKeyAlias"),
        ("MQTT_PSK_HINT", "gateway-fleet-eu"),
    ],
)
def test_kafka_class_names_and_identifier_roles_are_not_key_material(name: str, value: str):
    assert not decided(name, value)


def test_key_material_under_those_words_is_still_caught():
    assert decided("TLS_KEY", "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZg")
    assert decided("KEY", "2B7E151628AED2A6ABF7158809CF4F3C")
    assert decided("KAFKA_SASL_PASSWORD", "org.apache.kafka")  # a secret name: any literal is the secret


@pytest.mark.parametrize(
    "value",
    [
        "process.env.NODE_RED_CREDENTIAL_SECRET,",
        "process.env['NODE_RED_CREDENTIAL_SECRET']",
        'os.environ["DB_PASSWORD"]',
        'os.environ.get("DB_PASSWORD")',
        'os.getenv("DB_PASSWORD")',
        'System.getenv("DB_PASSWORD")',
        "env('DB_PASSWORD')",
        'ENV["DB_PASSWORD"]',
        'ENV.fetch("DB_PASSWORD")',
    ],
)
def test_code_reading_the_environment_is_a_reference(value: str):
    assert not decided("credentialSecret", value)


def test_code_with_a_literal_fallback_is_not_a_reference():
    assert decided("credentialSecret", 'process.env.NODE_RED_CREDENTIAL_SECRET || "Hunter2pass"')


@pytest.mark.parametrize(
    ("value", "secret"),
    [
        ('{"mqtt":{"user":"a","password":"Hunter2pass"}}', True),
        ("{mqtt: {user: a, password: Hunter2pass}}", True),
        ("users: [{username: 'admin', password: 'Hunter2pass'}]", True),
        ('{"mqtt":{"user":"a","password":"${MQTT_PASSWORD}"}}', False),
        ('{"password": "", "passwordMinLength": 12, "tokenType": "Bearer"}', False),
        ('{"password": null, "token": true}', False),
        ("url: http://broker:1883, topic: sensors/token", False),
        ("${DB_PASS:?DB_PASS must be set}, #{token:x}", False),
    ],
)
def test_credentials_set_inside_json_or_a_flow_mapping_are_caught_under_any_name(value: str, secret: bool):
    assert literal_secret("APP_SETTINGS", value) is secret


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FOO", "ghp_" + "a1B2" * 9),
        ("APP_SETTINGS", '{"mqtt": {"user": "gw", "password": "Hunter2pass"}}'),
        ("BROKER", "mqtts://gateway:Hunter2pass@broker.example.com:8883"),
    ],
)
def test_an_env_value_that_is_a_secret_by_itself_is_one_whatever_its_name(name, value):
    """As for flags and ConfigMap keys: the name only decides values that are not secrets by themselves."""
    from iotsec.admission.context import Context, DomainPolicy

    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "containers": [{"name": "app", "image": "r.example.com/a:1.2.3", "env": [{"name": name, "value": value}]}]
        },
    }
    ctx = Context(DomainPolicy(name="d", zone="core", pod_security="privileged"), datetime(2026, 12, 3, tzinfo=UTC))
    assert "no-literal-secrets" in {v.rule for v in decide(pod, ctx).violations}
