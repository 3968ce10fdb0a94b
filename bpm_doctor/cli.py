"""Command line: `bpm-doctor check`, `snapshot`, `lint`, `serve`.

Exit codes follow the Nagios plugin convention: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN (bad configuration or input, missing permission to
read what the verdict depends on, or an internal error).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bpm_doctor import __version__, config as config_module, log, redact, snapshot as snapshot_module
from bpm_doctor.errors import ConfigError, DoctorError
from bpm_doctor.readfile import write_text_atomically
from bpm_doctor.report import UNKNOWN

FORMATS = ("text", "json", "nagios")

CHECK_EPILOG = """\
exit status (Nagios plugin convention):
  0  OK: no warning or critical finding
  1  WARNING: at least one warning finding, no critical one
  2  CRITICAL: at least one critical finding, even from a partial scan
  3  UNKNOWN: an invalid command line, configuration or snapshot; a report or
     textfile that could not be written; an internal error; or read errors
     that could hide a problem (such as permission denied on a process's
     environment or executable, or systemctl failing) and no critical finding
"""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors exit 3 (UNKNOWN).

    argparse exits 2 on a usage error, which a Nagios-style monitor reads as
    CRITICAL. A wrong command line tells nothing about the box.
    """

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(UNKNOWN, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="bpm-doctor",
        description="Check that the Tangle Blueprint Manager is the only launcher of blueprint instances.",
    )
    parser.add_argument("--version", action="version", version=f"bpm-doctor {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help=f"configuration file (TOML); default {config_module.DEFAULT_PATH} when it exists")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr: -v for info, -vv for debug")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    check = commands.add_parser("check", help="scan this host (or a snapshot) and report findings",
                                epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("--snapshot", metavar="FILE", help="diagnose a saved snapshot instead of this host")
    check.add_argument("--format", choices=FORMATS, default="text", help="output format (default: text)")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE (atomically) instead of stdout")
    from bpm_doctor.report import prometheus

    prometheus.add_check_arguments(check)

    from bpm_doctor import serve

    serve_parser = commands.add_parser("serve", help="scan on an interval and serve /metrics and /healthz")
    serve.add_arguments(serve_parser)

    snap = commands.add_parser("snapshot", help="save what a scan of this host sees, secrets removed")
    snap.add_argument("--output", "-o", metavar="FILE", required=True, help="snapshot file to write")

    # The global options are accepted after the subcommand too (`check -v`);
    # SUPPRESS keeps a value given before it.
    for subcommand in (check, snap, serve_parser):
        _add_global_options(subcommand)

    lint = commands.add_parser("lint", help="check deploy files in a repository (units, scripts, settings, docs)")
    _add_lint_arguments(lint)
    _add_global_options(lint)
    return parser


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="configuration file (TOML), as before the command")
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log more to stderr, as before the command")


def _add_lint_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        from bpm_doctor.lint import cli as lint_cli
    except ImportError:  # the lint package is optional while it is being built
        parser.add_argument("paths", nargs="*")
        return
    lint_cli.add_arguments(parser)


def load_config(path: str | None) -> config_module.Config:
    if path is not None:
        return config_module.load(path, required=True)
    return config_module.load(config_module.DEFAULT_PATH, required=False)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.configure(args.verbose)
    if args.command is None:
        parser.print_help(sys.stderr)
        return UNKNOWN
    try:
        config = load_config(args.config)
        if args.command == "check":
            return run_check(args, config)
        if args.command == "snapshot":
            return run_snapshot(args, config)
        if args.command == "serve":
            from bpm_doctor import serve

            return serve.run(args, config)
        if args.command == "lint":
            from bpm_doctor.lint import cli as lint_cli

            return lint_cli.run(args, config)
    except ConfigError as error:
        for line in error.errors:
            print(f"bpm-doctor: {line}", file=sys.stderr)
        return UNKNOWN
    except DoctorError as error:
        print(f"bpm-doctor: {error}", file=sys.stderr)
        return UNKNOWN
    except KeyboardInterrupt:
        print("bpm-doctor: interrupted", file=sys.stderr)
        return UNKNOWN
    except Exception as error:  # noqa: BLE001 - the exit code must stay UNKNOWN, never a traceback and 1
        message = redact.redact_free_text(str(error))[:300]
        print(f"bpm-doctor: internal error: {type(error).__name__}: {message}", file=sys.stderr)
        if args.verbose >= 2 or os.environ.get("BPM_DOCTOR_DEBUG"):
            raise
        return UNKNOWN
    return UNKNOWN


def scan(args, config) -> "snapshot_module.Snapshot":
    from bpm_doctor.collect import collect_host

    return collect_host(config)


def run_check(args, config) -> int:
    from bpm_doctor.diagnose import diagnose
    from bpm_doctor.report import json_report, nagios, text, verdict

    started = time.monotonic()
    if args.snapshot:
        snapshot = snapshot_module.load(args.snapshot)
    else:
        snapshot = scan(args, config)
    findings, view = diagnose(snapshot, config)
    result = verdict(findings, snapshot, view)
    if args.textfile:
        from bpm_doctor.report import prometheus

        prometheus.write_textfile(args.textfile, result, config, scan_duration_seconds=time.monotonic() - started)
    renderer = {"text": text.render, "json": json_report.render, "nagios": nagios.render}[args.format]
    output = renderer(result)
    if args.output:
        write_atomically(args.output, output)
    else:
        write_stdout(output)
    logger = log.get_logger()
    if result.blind_spots:
        logger.warning("scan_incomplete", read_errors=dict(snapshot.read_errors))
    logger.info("check_finished", status=result.status, findings=len(findings), source=snapshot.source)
    return result.exit_code


def run_snapshot(args, config) -> int:
    snapshot = scan(args, config)
    snapshot_module.save(snapshot, args.output, header=f"taken by bpm-doctor {__version__}")
    print(f"bpm-doctor: wrote snapshot {args.output} ({len(snapshot.processes)} processes, "
          f"{len(snapshot.units)} units)", file=sys.stderr)
    return 0


def write_stdout(text: str) -> None:
    """Print a report; a closed pipe or a full disk is one line of error, not a traceback."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`); silence the flush at exit as well.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise DoctorError("standard output was closed before the report was written") from None
    except OSError as error:
        raise DoctorError(f"cannot write the report to standard output: {error.strerror or error}") from None


def write_atomically(path: str, text: str) -> None:
    """Write a report so readers never see half of it; raise DoctorError naming the path on failure."""
    try:
        write_text_atomically(path, text, mode=0o644)
    except OSError as error:
        raise DoctorError(f"{path}: cannot write the report: {error.strerror or error}") from error
