"""Whether a name and its value are a literal secret (no-literal-secrets, X1369-9.1.1.2-3).

One place decides for env vars, command-line flags and ConfigMap keys, on the name and the value together.

The name is read as words (`SPRING_DATASOURCE_PASSWORD`, `jwtTokenExpirationTime`, `spring.datasource.password`) and
sorted into what it says about its value:

- "secret": it holds a secret (`*_PASSWORD`, `*_TOKEN`, `*_SECRET`, `API_KEY`, `SIGNING_KEY`, `ERLANG_COOKIE`): a
  literal is the secret unless its shape says otherwise (a reference, a file path, a URL without credentials, a
  duration, a small number, a boolean, a template);
- "key": it may hold key material (`TLS_KEY`, `NETWORK_KEY`, `REDIS_AUTH`, `JWT`): only a value shaped like it
  (long hex, high-entropy base64, a PEM private key) is one;
- "about": it is about a secret, not the secret (`*_PASSWORD_FILE`, `TOKEN_TTL`, `API_KEY_HEADER`, `TOKEN_TYPE`,
  `PASSWORD_MIN_LENGTH`, `SECRET_NAME`, `EXISTING_SECRET`, `OAUTH2_TOKEN_URI`, `*_PASSWORD_HASH`, `KEY_SERIALIZER`,
  `ROUTING_KEY`);
- "carrier": it may embed one (`DATABASE_URL`, `*_DSN`, `JAVA_OPTS`, `*_JAAS_CONFIG`, `SPRING_APPLICATION_JSON`);
- "none": anything else.

Whatever the name, a value that is self-evidently a secret counts: a URI with a password in its userinfo, a PEM
private key, a JWT, a token with a vendor's secret prefix (`sk_live_`, `ghp_`, `hvs.`, ...). Under any name that
may carry one, so does an embedded `password=...` assignment with a literal value; under any name, a mapping entry
`"password": "..."` / `{token: x}` inside JSON or a flow mapping that sets a literal secret (`embedded_secret`).

A placeholder with a default (`${DB_PASS:Hunter2}`, `${PW:-Hunter2}`, `${PW-Hunter2}`) is judged by its default: that
literal runs whenever the variable is unset. `${VAR}` alone, and code reading the environment (`process.env.X`,
`os.environ["X"]`, `System.getenv("X")`), are references.

A value is decided on its first MAX_DECIDED_CHARS, and every check is linear in it (no ambiguous repetition; the
URI and JWT scans hop between literal markers), so an adversarial megabyte costs milliseconds.
"""

from __future__ import annotations

import re
from functools import lru_cache
from itertools import pairwise
from typing import Literal

NameKind = Literal["secret", "key", "about", "carrier", "none"]
MIN_SECRET_CHARS = 4  # shorter literals are placeholders (`|`, `-`, `x`), not secrets
MIN_SECRET_DIGITS = 4  # a number under a secret name with fewer digits is a setting (`0`, `10`, `365`)
MAX_REMEMBERED_CHARS = 256  # decisions on names and values up to this long are cached (they repeat in every pod)
MAX_DECIDED_CHARS = 16 * 1024  # of a value: keys and tokens are shorter (an RSA-4096 PEM is ~3.3 KB); bounds the cost

SECRET_STEMS = ("password", "passwd", "passphrase", "secret", "credential")  # inside a word: PGPASSWORD
SECRET_WORDS = frozenset(
    {"pass", "pwd", "pw", "psk", "token", "tokens", "apikey", "apikeys", "cookie", "requirepass", "masterauth"}
)  # requirepass, masterauth: Redis
SECRET_SUFFIXES = ("token", "apikey")  # accesstoken, authtoken, xapikey
KEY_WORDS = frozenset({"key", "keys"})
MAYBE_KEY_WORDS = frozenset({"auth", "jwt"})  # REDIS_AUTH may be a password, AUTH_TYPE is not: the value decides
# Words before KEY that make it a secret key. Not "access": an access key alone is the identifier half of a key pair
# (AWS_ACCESS_KEY_ID, MinIO's access key is the user name); SECRET_ACCESS_KEY is the secret half.
KEY_QUALIFIERS = frozenset(
    "api secret private signing sign encryption encrypt crypt master auth hmac jwt session license licence client "
    "app application account storage shared ssh gpg pgp aes cipher webhook admin root service subscription "
    "credentials credential password".split()
)
PUBLIC_KEY_QUALIFIERS = frozenset({"public", "publishable"})  # a public key is no secret; NEXT_PUBLIC_JWT_SECRET is
# Words after the secret word that make the name about the secret: where it is, how it is sent, checked or named.
ABOUT_WORDS = frozenset(
    "file files path paths dir directory location mount name names ref reference id ids url urls uri uris endpoint "
    "endpoints host hostname port addr address header headers param parameter field prefix type kind alg algorithm "
    "algorithms algo hash hashing encryption encoder encoding format mode method methods strategy policy provider "
    "providers source backend issuer audience aud scope scopes claim claims realm alias regex pattern validation "
    "validate validator required require enabled enable disabled disable allow allowed check checking rotation "
    "complexity strength requirements rules history reuse "
    "version env var variable cmd command query secure httponly samesite same site domain label usage generator "
    "cache hint serializer deserializer serde converter class classname".split()
)
# Words that make the name a quantity wherever they stand: TTL_TOKEN, MIN_PASSWORD_LENGTH, TOKEN_EXPIRATION_TIME.
QUANTITY_WORDS = frozenset(
    "ttl expiry expiration expirations expire expires expired exp lifetime lifespan validity age duration timeout "
    "interval period time seconds second secs sec ms millis milliseconds minutes minute mins hours hour days day "
    "length len min minimum max maximum size bits count limit limits rate retries attempts rounds window threshold "
    "delay".split()
)
# Words before KEY that make it an identifier's role, not key material: ROUTING_KEY, CACHE_KEY, MESSAGE_KEY.
KEY_ROLE_WORDS = frozenset("routing cache message partition sort shard primary foreign record".split())
SECRET_OBJECT_WORDS = frozenset({"name", "names", "ref", "id", "arn", "path", "manager", "store"})  # SECRET_NAME_*
CARRIER_WORDS = frozenset(
    "url urls uri uris dsn conn connection connstr connectionstring jaas opts options args json properties props "
    "broker brokers".split()
)

CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
NAME_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
FLAG = re.compile(r"^--?(?P<name>[A-Za-z][A-Za-z0-9_.-]*)=(?P<value>.+)$", re.S)

FLAG_VALUES = frozenset(
    "true false yes no on off y n none null nil enabled disabled enable disable required optional".split()
)
REFERENCE_STARTS = ("$", "#{", "{{", "<%", "%(", "ENC(", "arn:", "vault:", "ref+", "secret://")  # #{...}: SpEL
PLACEHOLDER_STARTS = ("$", "{", "<", "%(", "%s", "%{")  # inside a URI or an assignment: $(VAR), ${VAR}, {{ }}, %s
PATH_STARTS = ("/", "./", "../", "~/", "file:", "classpath:")
FILE_SUFFIX = re.compile(
    r"\.(pem|key|crt|cer|der|csr|p8|p12|pfx|jks|keystore|truststore|json|txt|ya?ml|conf|cfg|ini|properties|env|asc|"
    r"gpg|pub|zip|b64)$"
)
RESOURCE_PATH = re.compile(r"[a-z0-9_.{}:@-]+(?:/[a-z0-9_.{}:@-]+)+/?")  # lowercase segments: a name, not a key
URL_START = re.compile(r"^(?:[a-z][a-z0-9+.-]{0,30}://|jdbc:|mailto:)")
DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h|d|w|y))+|p(?:\d+[ymwd])*(?:t(?:\d+(?:\.\d+)?[hms])+)?")
SPOKEN_DURATION = re.compile(r"\d+\s?(?:seconds?|minutes?|hours?|days?|weeks?|months?|years?)")
NUMBER = re.compile(r"[+-]?\d+(?:\.\d+)?")
HEX_BYTES = re.compile(r"(?:0x)?[0-9a-f]{2}(?:[,:\s-]*(?:0x)?[0-9a-f]{2}){15,}")  # 16+ bytes: 128-bit key material
TOKEN_CHARS = re.compile(r"[A-Za-z0-9+/=_.~-]+")
PEM_PRIVATE_KEY = "PRIVATE KEY-----"
TOKEN_RUN = re.compile(r"[A-Za-z0-9_.-]+")
AUTHORITY_END = re.compile(r"[/?#\s]")
VENDOR_SECRET = re.compile(
    r"(?:(?:sk|rk)_(?:live|test)_|whsec_|gh[pousr]_|github_pat_|glpat-|xox[abprs]-|hv[sb]\.|AIza[0-9A-Za-z_-]{30}|"
    r"SG\.[A-Za-z0-9_-]{16}|NNSXS\.|npm_[A-Za-z0-9]{30}|hf_[A-Za-z0-9]{30}|ttn-account-v2\.)"
)
SECRET_URL_PARTS = ("hooks.slack.com/services/", "discord.com/api/webhooks/", "outlook.office.com/webhook/")
EMBEDDED = re.compile(  # applied to the lowercased value: IGNORECASE makes the alternation several times slower
    r"(?:password|passwd|pwd|secret|token|apikey|api_key|api-key|accountkey|sharedaccesskey)\W{0,2}[=:]\s{0,2}"
    r"[\"']?(?P<value>[^\s\"';&,})]+)"
)
EMBEDDED_MARKERS = ("pass", "pwd", "secret", "token", "key", "cred", "auth", "psk", "cookie")
# `"password": "..."`, `{password: x}`, `, token: 'y'`: a mapping entry inside JSON or a YAML/JS flow mapping; the
# name is quoted or follows `{`/`,` (not `${`, a placeholder), so `url: http://...` is not one. Bounded repetitions,
# none nested: at most ~100 steps per character.
MAPPING_ENTRY = re.compile(
    r"""(?:(?<![$#%])[{,]\s{0,8}["']?|["'])(?P<name>[A-Za-z0-9_.-]{1,100})["']?\s{0,8}:\s{0,8}"""
    r"""(?:"(?P<double>[^"\\]{0,1024})"|'(?P<single>[^'\\]{0,1024})'|(?P<bare>[^\s,{}\[\]"']{1,1024}))"""
)
# `${NAME:default}` (Spring, Quarkus, MicroProfile), `${NAME:-default}`, `${NAME-default}`, `${NAME:=default}` (shell):
# the default is what runs when NAME is unset, so it is judged as the value. `${NAME:?message}` has no default.
FALLBACK = re.compile(
    r"\$\{(?:[A-Za-z0-9_.\[\]-]{1,200}:(?![?])[-=]?|[A-Za-z_][A-Za-z0-9_]{0,200}[-=])(?P<default>.*)\}"
)
MAX_FALLBACK_DEPTH = 4  # ${A:${B:${C:x}}}
# Code that reads the value from the environment: process.env.X, os.environ["X"], System.getenv("X"), env("X").
ENV_READ = re.compile(
    r"""(?:process\.env(?:\.[A-Za-z_$][\w$]*|\[[^\]]{1,200}\])|os\.environ(?:\[[^\]]{1,200}\]|\.get\([^)]{1,200}\))"""
    r"""|os\.getenv\([^)]{1,200}\)|System\.getenv\([^)]{1,200}\)|(?:env|getenv|ENV\.fetch)\([^)]{1,200}\)"""
    r"""|ENV\[[^\]]{1,200}\])"""
)
DOTTED_IDENTIFIER = re.compile(r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+")  # org.apache.kafka...StringSerializer


@lru_cache(maxsize=8192)
def name_kind(name: str) -> NameKind:
    """What a variable, key or flag name says about its value; cached: every pod repeats its names."""
    words = [word.lower() for word in NAME_SEPARATORS.split(CAMEL_BOUNDARY.sub("_", name)) if word]
    last = _last_secret_word(words)
    if last is None:
        return "carrier" if any(word in CARRIER_WORDS for word in words) else "none"
    if _about_a_secret(words, last):
        return "about"
    word = words[last]
    if word in KEY_WORDS and last > 0 and words[last - 1] in KEY_ROLE_WORDS:
        return "about"  # ROUTING_KEY, CACHE_KEY: the role of an identifier
    if word in MAYBE_KEY_WORDS or (word in KEY_WORDS and not _qualified_key(words, last)):
        return "key"
    return "secret"


def secret_name(name: str) -> bool:
    """Whether a name may carry a secret: the cheap gate before `literal_secret` decides on the value.

    Broader than the names that say "secret" (`DATABASE_URL`, `JAVA_OPTS`, `TLS_KEY` pass it: the value decides); names
    about a secret (`TOKEN_TTL`, `PASSWORD_MIN_LENGTH`, `*_FILE`) do not. Where no value is at hand and the name alone
    must say "this is a secret", use `names_a_secret`."""
    return name_kind(name) in ("secret", "key", "carrier")


def names_a_secret(name: str) -> bool:
    """Whether the name alone says its value is a secret: `MQTT_PASSWORD`, `API_KEY`; not `TOKEN_TTL`, `DB_URL`."""
    return name_kind(name) == "secret"


def secret_value(value: object) -> bool:
    """Whether a value, under a name that says it holds a secret, is the secret itself rather than a pointer to one."""
    if not isinstance(value, str):
        return False
    text = value[:MAX_DECIDED_CHARS].strip()
    return len(text) >= MIN_SECRET_CHARS and not _not_the_secret(text)


def literal_secret(name: str, value: object) -> bool:
    """The decision: `name=value` carries a secret in clear."""
    if not isinstance(value, str):
        return False
    if len(value) <= MAX_REMEMBERED_CHARS and len(name) <= MAX_REMEMBERED_CHARS:
        return _remembered_literal_secret(name, value)
    return _literal_secret(name, value)


@lru_cache(maxsize=4096)
def _remembered_literal_secret(name: str, value: str) -> bool:
    """Every pod of a workload, and every review of its rollouts, repeats its env vars and flags: a pure decision on
    short strings is made once (long ones are not kept: the cache would hold what a client sent)."""
    return _literal_secret(name, value)


def _literal_secret(name: str, value: str) -> bool:
    text = _fallback(value[:MAX_DECIDED_CHARS].strip())
    if len(text) < MIN_SECRET_CHARS:
        return False
    if _self_evident(text) or _decided(name, text):
        return True
    return embedded_secret(text) is not None


def embedded_secret(text: str) -> str | None:
    """The name of a mapping entry inside `text` that sets a literal secret: `{"mqtt": {"password": "..."}}`,
    `mqtt: {user: a, password: x}`, `users: [{username: 'admin', password: '...'}]`; None if there is none."""
    if ":" not in text:
        return None
    lower = text.lower()
    if not any(marker in lower for marker in EMBEDDED_MARKERS):
        return None
    for match in MAPPING_ENTRY.finditer(text):
        value = next(part for part in (match["double"], match["single"], match["bare"]) if part is not None)
        entry = _fallback(value.strip())
        if len(entry) >= MIN_SECRET_CHARS and _decided(match["name"], entry):
            return match["name"]
    return None


def _decided(name: str, text: str) -> bool:
    """Name and value together, `text` stripped and at least MIN_SECRET_CHARS long."""
    kind = name_kind(name)
    if kind == "none":
        return False
    if _embedded_credential(text):
        return True
    if kind == "secret":
        return not _not_the_secret(text)
    if kind == "key":
        return _key_material(text)
    return False


def _fallback(text: str) -> str:
    """The literal a placeholder falls back to (`${DB_PASS:Hunter2}` -> `Hunter2`); any other text unchanged."""
    for _ in range(MAX_FALLBACK_DEPTH):
        match = FALLBACK.fullmatch(text) if text.startswith("${") else None
        if match is None:
            return text
        text = match["default"].strip()
    return text


def secret_flag(argument: str) -> str | None:
    """The flag's name when a command-line argument passes a literal secret (`--db-password=hunter2`)."""
    if not argument.startswith("-"):
        return None
    if len(argument) <= MAX_REMEMBERED_CHARS:
        return _remembered_secret_flag(argument)
    return _secret_flag(argument)


@lru_cache(maxsize=4096)
def _remembered_secret_flag(argument: str) -> str | None:
    return _secret_flag(argument)


def _secret_flag(argument: str) -> str | None:
    match = FLAG.match(argument)
    if match is None or not literal_secret(match.group("name"), match.group("value")):
        return None
    return match.group("name")


def _secret_word(word: str) -> bool:
    return (
        word in SECRET_WORDS
        or word in KEY_WORDS
        or word in MAYBE_KEY_WORDS
        or any(stem in word for stem in SECRET_STEMS)
        or word.endswith(SECRET_SUFFIXES)
    )


def _last_secret_word(words: list[str]) -> int | None:
    for index in range(len(words) - 1, -1, -1):
        if _secret_word(words[index]):
            return index
    return None


def _about_a_secret(words: list[str], last: int) -> bool:
    """The name describes a secret (its file, lifetime, header, name...) rather than holding it."""
    if any(word in QUANTITY_WORDS for word in words):
        return True
    if any(word in ABOUT_WORDS for word in words[last + 1 :]):
        return True
    if "existing" in words[:last] or (
        words[last] in KEY_WORDS and last > 0 and words[last - 1] in PUBLIC_KEY_QUALIFIERS
    ):
        return True
    return any(word in ("secret", "secrets") and after in SECRET_OBJECT_WORDS for word, after in pairwise(words))


def _qualified_key(words: list[str], index: int) -> bool:
    """`API_KEY`, `SECRET_ACCESS_KEY`, `SIGNING_KEY` are secrets; a bare `TLS_KEY` or `PARTITION_KEY` may not be."""
    if index > 0 and words[index - 1] in KEY_QUALIFIERS:
        return True
    return any(stem in word for word in words[:index] for stem in SECRET_STEMS)


def _not_the_secret(text: str) -> bool:
    """Shapes that, even under a secret's name, are not the secret: pointers, settings, templates."""
    lower = text.lower()
    if lower in FLAG_VALUES or text.startswith(REFERENCE_STARTS) or _path(text, lower) or _env_read(text):
        return True
    if ":" in lower and URL_START.match(lower):
        return True  # one with credentials was caught as self-evident already
    first = lower[0]
    if (first.isdigit() or first in "+-") and NUMBER.fullmatch(text):
        return len(text.lstrip("+-").split(".")[0]) < MIN_SECRET_DIGITS
    if first.isdigit() or first == "p":
        return bool(DURATION.fullmatch(lower) or SPOKEN_DURATION.fullmatch(lower))
    return False


def _path(text: str, lower: str) -> bool:
    if text.startswith(PATH_STARTS) or (len(text) > 2 and text[1] == ":" and text[2] in "\\/"):
        return True
    if " " in text or "\t" in text or "\n" in text:
        return False
    return bool(("." in text and FILE_SUFFIX.search(lower)) or ("/" in text and RESOURCE_PATH.fullmatch(text)))


def _self_evident(text: str) -> bool:
    """Values that are secrets whatever they are called."""
    if PEM_PRIVATE_KEY in text or VENDOR_SECRET.match(text):
        return True
    if ".eyJ" in text and _jwt(text):
        return True
    return "://" in text and (_password_in_userinfo(text) or any(part in text for part in SECRET_URL_PARTS))


def _password_in_userinfo(text: str) -> bool:
    """`scheme://user:password@host`, the password literal (not `$(VAR)`, `${VAR}`, `{{ .Values.x }}`)."""
    start = text.find("://")
    while start >= 0:
        end = AUTHORITY_END.search(text, start + 3)
        authority = text[start + 3 : end.start() if end else len(text)]
        userinfo, at, _ = authority.rpartition("@")
        _, colon, password = userinfo.partition(":")
        if at and colon and password and not password.startswith(PLACEHOLDER_STARTS):
            return True
        start = text.find("://", start + 3)
    return False


def _jwt(text: str) -> bool:
    """A JSON Web Token: three base64url parts, header and payload both JSON objects (`eyJ` is `{"`)."""
    for run in TOKEN_RUN.finditer(text):
        parts = run.group().split(".")
        if len(parts) >= 3 and parts[0].startswith("eyJ") and parts[1].startswith("eyJ") and len(parts[1]) > 8:
            return True
    return False


def _embedded_credential(text: str) -> bool:
    """`password=...`, `"token": "..."`, `AccountKey=...` inside a connection string, options or JSON."""
    if "=" not in text and ":" not in text:
        return False
    lower = text.lower()
    if not any(marker in lower for marker in EMBEDDED_MARKERS) or _path(text, lower):
        return False
    for match in EMBEDDED.finditer(lower):
        value = match.group("value")
        if not value.startswith(PLACEHOLDER_STARTS) and value not in FLAG_VALUES:
            return True
    return False


def _key_material(text: str) -> bool:
    """Long hex (16+ bytes) or high-entropy base64/URL-safe text: what keys and tokens look like."""
    lower = text.lower()
    if text.startswith(REFERENCE_STARTS) or _path(text, lower) or URL_START.match(lower) or _env_read(text):
        return False
    if HEX_BYTES.fullmatch(lower):
        return True
    if not TOKEN_CHARS.fullmatch(text) or _dotted_name(text):
        return False
    classes = sum((any(c.islower() for c in text), any(c.isupper() for c in text), any(c.isdigit() for c in text)))
    return (classes >= 2 and len(text) >= 20) or (classes == 3 and len(text) >= 16)


def _env_read(text: str) -> bool:
    """Code that reads the value from the environment (`process.env.SECRET,` in a settings.js)."""
    return text[:1] in "peosSgE" and ENV_READ.fullmatch(text.rstrip(",;")) is not None


def _dotted_name(text: str) -> bool:
    """A dotted name (`org.apache.kafka.connect.storage.StringConverter`, `telemetry.Sensors.Temperature`): the name
    of a class or a topic, not key material. A lowercase word segment tells it from a dotted token."""
    return (
        "." in text
        and DOTTED_IDENTIFIER.fullmatch(text) is not None
        and any(part.isalpha() and part.islower() for part in text.split("."))
    )
