"""`iotsec check` of a small file starts fast (issue 18): the CLI loads only the command being run, and the CEL
machinery (celpy, its lark parser, jsonschema) only when a custom resource is checked, compiling each rule of the
kinds present once, in one CEL environment whose parser is kept in the user's private cache. Behaviour, not
timings, is asserted here."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import celpy
import pytest

from iotsec.admission import snapshot
from iotsec.api import celrules, validation
from iotsec.cli import main as cli
from iotsec.model.manifests import load_documents
from tests.conftest import EXAMPLES, ROOT

DEPLOYMENT = EXAMPLES / "workloads" / "conforming" / "mqtt-gateway.yaml"
DOMAINS = EXAMPLES / "platform" / "10-securitydomains.yaml"
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CEL_MACHINERY = ("celpy", "lark", "jsonschema")
MODELS = ("pydantic", "iotsec.api.common", "iotsec.api.kinds", "iotsec.api.validation")

PROBE = """
import contextlib, io, json, sys
from iotsec.cli.main import main
with contextlib.redirect_stdout(io.StringIO()):
    main({argv!r})
print(json.dumps(sorted({{m for m in sys.modules if m in {machinery!r}}})))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("iotsec.cli."))))
"""


def _modules_after(argv: list[str], watched: tuple[str, ...] = CEL_MACHINERY) -> tuple[list[str], list[str]]:
    """Which `watched` modules (by default the CEL machinery) and which iotsec.cli modules a fresh interpreter holds
    after `iotsec ARGV`."""
    code = PROBE.format(argv=argv, machinery=watched)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    machinery, cli_modules = done.stdout.strip().splitlines()[-2:]
    return json.loads(machinery), json.loads(cli_modules)


def test_checking_deployments_loads_no_cel_machinery_no_models_and_no_other_command():
    machinery, cli_modules = _modules_after(["check", str(DEPLOYMENT)])
    assert machinery == []
    models, _ = _modules_after(["check", str(DEPLOYMENT)], MODELS)
    assert models == [], "a file without custom resources is judged without pydantic and the API models"
    assert cli_modules == ["iotsec.cli.check", "iotsec.cli.common", "iotsec.cli.main"]


def test_checking_a_security_domain_loads_the_cel_machinery_and_models_it_needs():
    machinery, _ = _modules_after(["check", str(DOMAINS)])
    assert machinery == sorted(CEL_MACHINERY)
    models, _ = _modules_after(["check", str(DOMAINS)], MODELS)
    assert models == sorted(MODELS)


@pytest.fixture
def cel_log(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """From empty caches: how many CEL environments were built and which rule texts were compiled."""
    _clear_cel_caches()
    log: dict[str, Any] = {"environments": 0, "rules": []}
    build, compile_rule = celpy.Environment.__init__, celpy.Environment.compile

    def counting_build(self: celpy.Environment, *args: Any, **kwargs: Any) -> None:
        log["environments"] += 1
        build(self, *args, **kwargs)

    def recording_compile(self: celpy.Environment, text: str) -> Any:
        log["rules"].append(text)
        return compile_rule(self, text)

    monkeypatch.setattr(celpy.Environment, "__init__", counting_build)
    monkeypatch.setattr(celpy.Environment, "compile", recording_compile)
    yield log
    _clear_cel_caches()  # no program of the patched environment outlives the test


def _clear_cel_caches() -> None:
    celrules.program.cache_clear()
    celrules._environment.cache_clear()
    validation._CHECKED.clear()  # the answers of an earlier test's resources would spare these their rules


def _check(path: Any) -> snapshot.Report:
    return snapshot.check(load_documents([path]), NOW)


def _rules_of(kind: str) -> set[str]:
    """Every x-kubernetes-validations rule in `kind`'s generated schema."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update(rule["rule"] for rule in node.get("x-kubernetes-validations", ()))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(validation._schema(kind))
    return found


def test_checking_deployments_compiles_no_cel_program(cel_log):
    report = _check(DEPLOYMENT)
    assert report.checked  # the Deployment was judged
    assert cel_log == {"environments": 0, "rules": []}


def test_a_security_domain_compiles_only_its_kinds_rules_once_in_one_environment(cel_log):
    report = _check(DOMAINS)
    assert not report.invalid
    compiled = cel_log["rules"]
    assert compiled, "the SecurityDomains' rules were evaluated"
    assert set(compiled) <= _rules_of("SecurityDomain")
    assert not set(compiled) & (_rules_of("TenantIsolation") - _rules_of("SecurityDomain"))
    assert len(compiled) == len(set(compiled)), "a rule compiled twice"
    assert cel_log["environments"] == 1, "one CEL environment (one parser) serves every rule"


def test_compiled_programs_are_reused_across_checks(cel_log):
    _check(DOMAINS)
    first = list(cel_log["rules"])
    _check(DOMAINS)
    assert cel_log["rules"] == first
    assert cel_log["environments"] == 1


def test_an_invalid_resource_still_gets_its_cel_message(cel_log):
    body = {
        "apiVersion": "iotsec.io/v1alpha1",
        "kind": "SecurityDomain",
        "metadata": {"name": "ingestion"},
        "spec": {"zone": "core", "namespaces": ["ingestion"], "internet": {"ingress": True}},
    }
    message = "internet ingress/egress is only permitted for access and interface zones (X1369-9.4.1-4)"
    assert validation.validate_resource(body) == [validation.Problem("spec.internet", message)]
    assert cel_log["environments"] == 1


def _commands(parser: argparse.ArgumentParser) -> list[str]:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(sub.choices)


def test_the_parser_of_a_command_holds_that_command_only():
    assert _commands(cli._parser("check")) == ["check"]
    assert _commands(cli._parser("webhook-config")) == ["webhook", "webhook-config"]


@pytest.mark.parametrize("first", [None, "--help", "--version", "chekc"])
def test_help_version_and_unknown_commands_see_every_command(first):
    commands = _commands(cli._parser(first))
    assert {"check", "validate", "audit", "report", "webhook-config"} <= set(commands)
    assert commands[:3] == ["crds", "validate", "controls"]  # --help order kept


def test_an_unknown_command_is_still_a_usage_error_listing_the_commands(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["chekc"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'chekc'" in err
    assert "'check'" in err
    assert "'audit'" in err


CACHED_PROBE = """
import contextlib, io, json, sys
import lark.lark
from iotsec.cli.main import main

if {refuse_analysis!r}:
    def refuse(*args, **kwargs):
        raise AssertionError("the CEL grammar was analysed again")

    lark.lark.load_grammar = refuse
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["check", {path!r}])
print(json.dumps([code, out.getvalue()]))
"""


def _check_with_cache(cache_home: Any, refuse_analysis: bool = False) -> tuple[int, str]:
    """Exit code and output of `iotsec check` of the SecurityDomains in a fresh interpreter whose cache is
    `cache_home`; with refuse_analysis, building the CEL parser from its grammar fails (it must come from the cache)."""
    code = CACHED_PROBE.format(refuse_analysis=refuse_analysis, path=str(DOMAINS))
    env = {**os.environ, "XDG_CACHE_HOME": str(cache_home)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    exit_code, output = json.loads(done.stdout.strip().splitlines()[-1])
    return exit_code, output


def test_the_cel_parser_is_kept_in_the_users_cache_and_loaded_from_it(tmp_path):
    first = _check_with_cache(tmp_path)
    folder = tmp_path / "iotsec"
    assert (folder / "cel-parser.lark").is_file()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert _check_with_cache(tmp_path, refuse_analysis=True) == first


def test_a_cache_folder_others_may_write_is_not_used(tmp_path):
    first = _check_with_cache(tmp_path)
    (tmp_path / "iotsec").chmod(0o777)
    (tmp_path / "iotsec" / "cel-parser.lark").unlink()
    assert _check_with_cache(tmp_path) == first
    assert not (tmp_path / "iotsec" / "cel-parser.lark").exists()


def test_no_usable_cache_location_still_checks(tmp_path):
    expected = _check_with_cache(tmp_path / "usable")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert _check_with_cache(blocked) == expected


def test_checking_deployments_loads_no_builder_of_keys_backups_or_audit_sinks():
    """The admission engine needs three names of objects iotsec makes (a canary Role's prefix, the backup Jobs'
    account prefix, a tenant's StorageClass): from iotsec.model.names, not from the builders that bring the API
    models and cryptography with them (~0.1 s of every `iotsec check`)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from iotsec.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({['check', str(DEPLOYMENT)]!r})\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('iotsec.build.', 'iotsec.pki')))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert not [m for m in loaded if m in ("iotsec.build.audit", "iotsec.build.backup", "iotsec.build.tenant")], loaded
    assert not [m for m in loaded if m.startswith("iotsec.pki")], loaded


def test_handler_threads_reaching_their_first_rules_at_once_build_one_parser(cel_log):
    """The operator's 16 handler threads validate their first resources together after a start."""
    import threading

    domains = [d.obj for d in load_documents([DOMAINS]) if d.obj.get("kind") == "SecurityDomain"]
    start = threading.Barrier(8)
    problems: list[list[Any]] = []

    def validate() -> None:
        start.wait()
        problems.append([validation.validate_resource(domain) for domain in domains])

    threads = [threading.Thread(target=validate) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(problems) == 8
    assert all(found == problems[0] for found in problems), "every thread judged the same"
    assert cel_log["environments"] == 1, "one parser, built once, the other threads waiting for it"
