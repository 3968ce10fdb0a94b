"""Read the flags `cargo-tangle blueprint run` accepts from its `--help`.

The built-in flag set in `bpm_doctor.identify` follows cargo-tangle
0.4.0-alpha.23 to 0.5.0-alpha.14. Newer releases may add or drop flags, so
where cargo-tangle is installed on the machine running the lint, its own
help text is the better source. The help is clap's: option lines are
indented and start with `-`, such as

      -k, --keystore-path <KEYSTORE_PATH>
          --allow-unchecked-attestations

and a `<VALUE>` after a flag means it takes a value. When cargo-tangle is
missing, fails, prints no options or does not finish within
`HELP_TIMEOUT_SECONDS`, the built-in set is used and the reason is kept
in `ManagerFlags.source`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from bpm_doctor import identify, log

HELP_TIMEOUT_SECONDS = 5.0
BUILT_IN_SOURCE = "the built-in flag set of cargo-tangle 0.4.0-alpha.23 to 0.5.0-alpha.14"

# clap indents option lines by 2 to 6 spaces and their descriptions by 10,
# so a description line that starts with `--flag` is not read as an option.
_OPTION_LINE = re.compile(r"^[ \t]{1,8}(-[^\n]*)$")
_FLAG = re.compile(r"^(--?[A-Za-z0-9][A-Za-z0-9_-]*)(.*)$")
_ALIASES = re.compile(r"\[(?:short )?aliases?: ([^\]]*)\]")


@dataclass(frozen=True)
class ManagerFlags:
    """The options `blueprint run` accepts, split by whether they take a value."""

    with_value: frozenset[str]
    switches: frozenset[str]
    source: str


BUILT_IN = ManagerFlags(
    frozenset(identify.BLUEPRINT_RUN_OPTIONS_WITH_VALUE),
    frozenset(identify.BLUEPRINT_RUN_SWITCHES),
    BUILT_IN_SOURCE,
)


def parse_help(text: str) -> tuple[set[str], set[str]]:
    """Return (options that take a value, switches) from clap help text."""
    with_value: set[str] = set()
    switches: set[str] = set()
    last_line_flags: list[str] = []
    last_takes_value = False
    for line in text.splitlines():
        match = _OPTION_LINE.match(line)
        if match is None:
            aliases = _ALIASES.search(line)
            if aliases and last_line_flags:
                target = with_value if last_takes_value else switches
                target.update(_alias_flags(aliases.group(1)))
            continue
        flags, takes_value = _option_spec(match.group(1))
        if not flags:
            continue
        (with_value if takes_value else switches).update(flags)
        last_line_flags, last_takes_value = flags, takes_value
        aliases = _ALIASES.search(line)
        if aliases:
            (with_value if takes_value else switches).update(_alias_flags(aliases.group(1)))
    return with_value, switches


def _option_spec(text: str) -> tuple[list[str], bool]:
    # The spec ends where two spaces start the description (clap's short help).
    spec = re.split(r"\s{2,}", text.strip(), maxsplit=1)[0]
    flags: list[str] = []
    takes_value = False
    for item in spec.split(","):
        match = _FLAG.match(item.strip())
        if match is None:
            continue
        flags.append(match.group(1))
        if "<" in match.group(2):
            takes_value = True
    return flags, takes_value


def _alias_flags(text: str) -> set[str]:
    flags = set()
    for alias in text.split(","):
        alias = alias.strip()
        if not alias:
            continue
        if alias.startswith("-"):
            flags.add(alias)
        else:
            flags.add(("-" if len(alias) == 1 else "--") + alias)
    return flags


def accepted_flags(
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    timeout: float = HELP_TIMEOUT_SECONDS,
) -> ManagerFlags:
    """Return the installed cargo-tangle's `blueprint run` flags, else the built-in set."""
    logger = log.get_logger()
    executable = which("cargo-tangle")
    if executable is None:
        return BUILT_IN
    command = [executable, "blueprint", "run", "--help"]
    try:
        completed = run(command, capture_output=True, text=True, timeout=timeout,
                        stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        logger.warning("manager_help_timeout", executable=executable, timeout_seconds=timeout)
        return _fallback(f"`{executable} blueprint run --help` timed out after {timeout:g} s")
    except OSError as error:
        logger.warning("manager_help_failed", executable=executable, error=error.strerror or str(error))
        return _fallback(f"`{executable} blueprint run --help` could not start: {error.strerror or error}")
    if completed.returncode != 0:
        logger.warning("manager_help_failed", executable=executable, status=completed.returncode)
        return _fallback(f"`{executable} blueprint run --help` exited with status {completed.returncode}")
    with_value, switches = parse_help(completed.stdout or "")
    if not with_value and not switches:
        logger.warning("manager_help_unreadable", executable=executable)
        return _fallback(f"`{executable} blueprint run --help` listed no options")
    logger.info("manager_help_read", executable=executable, options=len(with_value) + len(switches))
    return ManagerFlags(frozenset(with_value), frozenset(switches),
                        f"`{executable} blueprint run --help`")


def _fallback(reason: str) -> ManagerFlags:
    return ManagerFlags(BUILT_IN.with_value, BUILT_IN.switches, f"{BUILT_IN_SOURCE} ({reason})")
