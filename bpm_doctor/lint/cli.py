"""Command-line glue for `bpm-doctor lint PATH...`: arguments, report, exit status."""

from __future__ import annotations

import argparse
import sys

from bpm_doctor import log
from bpm_doctor.config import Config
from bpm_doctor.lint import LintResult, lint_paths
from bpm_doctor.model import Severity

FORMATS = ("text", "json", "sarif")
FAIL_ON = ("info", "warning", "critical")
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_NOT_CHECKED = 3

EPILOG = """\
exit status:
  0  no active finding at or above --fail-on
  1  at least one active finding at or above --fail-on
  3  invalid command line; or no such finding, but a path could not be
     checked (not found, unreadable, not a kind lint reads) or the report
     could not be written

Silence one finding with a comment on its line or the line above it:
  # bpm-doctor: ignore[direct-run-unit] remote-target VM, the manager installs this unit
A suppression without a reason silences nothing and is itself reported.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `lint` subcommand's arguments and help epilog to its parser."""
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="files or directories to lint; directories are walked, skipping .git, "
                             "node_modules, target, .venv and tool caches")
    parser.add_argument("--format", choices=FORMATS, default="text",
                        help="report format: text (one line per finding), json (schema bpm-doctor/lint/1) "
                             "or sarif (SARIF 2.1.0); default: text")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="warning",
                        help="lowest severity of an active finding that makes the exit status 1; "
                             "default: warning")
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the report to FILE (replaced atomically) instead of standard output")
    if parser.epilog is None:
        parser.epilog = EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter


def exit_status(result: LintResult, fail_on: Severity) -> int:
    """Return 1 for an active finding at or above `fail_on`, else 3 when a path was not checked, else 0."""
    if any(finding.severity >= fail_on for finding in result.findings):
        return EXIT_FINDINGS
    if result.errors:
        return EXIT_NOT_CHECKED
    return EXIT_OK


def render(result: LintResult, output_format: str, exit_code: int) -> str:
    if output_format == "json":
        from bpm_doctor.report import lint_json

        return lint_json.render(result, exit_code)
    if output_format == "sarif":
        from bpm_doctor.report import sarif

        return sarif.render(result)
    from bpm_doctor.report import lint_text

    return lint_text.render(result)


def run(args: argparse.Namespace, config: Config) -> int:
    """Lint `args.paths`, write the report and return the exit status (see EPILOG)."""
    logger = log.get_logger()
    result = lint_paths(args.paths, config)
    if result.errors:
        from bpm_doctor.report import escape_controls

        for error in result.errors:
            print(escape_controls(f"bpm-doctor: {error}"), file=sys.stderr)
    exit_code = exit_status(result, Severity.parse(args.fail_on))
    output = render(result, args.format, exit_code)
    if args.output:
        from bpm_doctor.cli import write_atomically

        try:
            write_atomically(args.output, output)
        except OSError as error:
            print(f"bpm-doctor: {args.output}: cannot write the report: {error.strerror or error}", file=sys.stderr)
            return EXIT_NOT_CHECKED
    else:
        sys.stdout.write(output)
    logger.info("lint_finished", files=len(result.files), findings=len(result.findings),
                suppressed=len(result.suppressed), errors=len(result.errors), exit_code=exit_code)
    return exit_code
