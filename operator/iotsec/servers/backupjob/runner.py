"""The program BackupPolicy Jobs run: restic backups, off-site copies, retention, integrity checks and restore drills.

CLI: ``python -m iotsec.servers.backupjob.runner init|backup|verify|restore|drill --config CONFIG.json
--result RESULT.json``
(password from ``RESTIC_PASSWORD`` or ``--password-file``); exit 0 on success, 1 on a failed result, 2 on bad config.
Only the standard library is used, so the Job image needs Python and restic and nothing else.
The rest of the package, by concern, is listed in its __init__.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from iotsec.model.time import now
from iotsec.servers.backupjob.config import ConfigError, JobConfig, load_config, read_password
from iotsec.servers.backupjob.operations import Runner
from iotsec.servers.backupjob.result import Result, stamp, write_result

log = logging.getLogger(__package__)

OPERATIONS = ("init", "backup", "verify", "restore", "drill")
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_OK if exc.code in (0, None) else EXIT_CONFIG
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")

    started = now()
    try:
        config, runner = _prepare(args)
    except ConfigError as exc:
        message = f"bad config: {exc}"
        print(f"iotsec backup: {message}", file=sys.stderr)
        failed = Result(args.operation, False, stamp(started), stamp(now()), 0.0, [], [message])
        with contextlib.suppress(OSError):
            write_result(args.result, failed.to_message())
        return EXIT_CONFIG

    result = _run(args.operation, config, runner)
    try:
        write_result(args.result, result.to_message())
    except OSError as exc:
        result.succeeded = False
        result.errors.append(f"cannot write the result to {args.result}: {exc.strerror}")
    print(result.to_json())
    for error in result.errors:
        log.error("%s", error)
    return EXIT_OK if result.succeeded else EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m iotsec.servers.backupjob.runner",
        description="Run one restic operation of a BackupPolicy and write its result as JSON.",
    )
    parser.add_argument("operation", choices=OPERATIONS)
    parser.add_argument("--config", required=True, metavar="CONFIG.json", help="paths, targets, retention, ...")
    parser.add_argument("--result", metavar="RESULT.json", help="where to write the result (also printed)")
    parser.add_argument("--password-file", metavar="FILE", help="repository password (default: $RESTIC_PASSWORD)")
    parser.add_argument("--snapshot", help="restore: the snapshot id (default: the config's, else latest)")
    parser.add_argument("--destination", metavar="DIR", help="restore: the folder to restore into")
    parser.add_argument("--include", metavar="PATH", help="restore: only this path of the snapshot, e.g. /data/CLAIM")
    parser.add_argument("--target", help="restore/drill: the target to read from (default: the primary)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every restic command")
    return parser


def _prepare(args: argparse.Namespace) -> tuple[JobConfig, Runner]:
    """The config (command-line options win over its keys) and a Runner for it; ConfigError if either is unusable."""
    overrides = {
        "snapshot": args.snapshot,
        "destination": args.destination,
        "target": args.target,
        "include": args.include,
    }
    config = load_config(args.config, args.operation, overrides)
    password = read_password(args.password_file)
    try:
        runner = Runner(
            password,
            restic=config.restic,
            timeout=config.timeout,
            tags=config.tags,
            snapshot_tags=config.snapshot_tags,
            host=config.host,
            cache_dir=config.cache_dir,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    return config, runner


def _run(operation: str, config: JobConfig, runner: Runner) -> Result:
    targets = {target.name: target for target in config.targets}
    if operation == "init":
        return runner.init_targets(config.targets)
    if operation == "backup":
        return runner.backup(
            config.paths,
            config.targets,
            config.retention,
            expect_data=config.expect_data,
            pre_hook=config.pre_hook,
            post_hook=config.post_hook,
        )
    if operation == "verify":
        return runner.verify(config.targets, config.read_data_subset)
    assert config.target is not None
    if operation == "restore":
        assert config.destination is not None
        return runner.restore(targets[config.target], config.destination, config.snapshot, config.include)
    scratch = config.scratch or config.destination
    assert scratch is not None
    return runner.drill(targets[config.target], scratch)


if __name__ == "__main__":
    sys.exit(main())
