"""Recognise the manager daemon, manager commands and instances by argv.

The rules follow cargo-tangle's clap definitions (cargo-tangle 0.4.0-alpha.23
to 0.5.0-alpha.14, `cli/src/main.rs` of the blueprint SDK) and the standalone
`blueprint-manager` binary of the same SDK. Unit names, descriptions, syslog
identifiers and directory names never decide what a process is.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

MANAGER_EXECUTABLES = ("cargo-tangle", "blueprint-manager")

# `cargo-tangle` top-level options from the flattened clap_cargo structs; they
# may stand before the `blueprint` subcommand.
_TOP_LEVEL_OPTIONS_WITH_VALUE = {"--manifest-path", "--features", "-F"}
_TOP_LEVEL_SWITCHES = {"--all-features", "--no-default-features"}

# `cargo-tangle blueprint run` options (`cli/src/main.rs:196-245` at SDK commit
# 4c85bd163da0). clap exits with status 2 on anything else.
BLUEPRINT_RUN_OPTIONS_WITH_VALUE = {
    "--protocol", "-p",
    "--http-rpc-url",
    "--ws-rpc-url",
    "--keystore-path", "-k",
    "--network", "-w",
    "--data-dir", "-d",
    "--bootnodes", "-n",
    "--settings-file", "-f",
    "--spawn-method",
    "--preferred-source",
}
BLUEPRINT_RUN_SWITCHES = {
    "--allow-unchecked-attestations",
    "--vm",
    "--no-vm",
    "--save-runtime-prefs",
    "--help", "-h",
}

# Standalone `blueprint-manager` options (`crates/manager/src/config/mod.rs`),
# with every optional feature's options, because the build is unknown.
STANDALONE_OPTIONS_WITH_VALUE = {
    "--blueprint-config", "-c",
    "--keystore-uri", "-k",
    "--data-dir", "-d",
    "--cache-dir", "-z",
    "--runtime-dir", "-r",
    "--instance-id", "--id",
    "--preferred-source", "-s",
    "--kube-service-port",
    "--auth-proxy-host",
    "--auth-proxy-port",
    "--default-address-pool",
    "--network-interface",
    "--preferred-provider",
    "--max-hourly-cost",
    "--cloud-credentials-path",
}
STANDALONE_SWITCHES = {
    "--pretty",
    "--test-mode", "-t",
    "--allow-unchecked-attestations",
    "--no-vm",
    "--enable-remote-deployments",
    "--auto-select-cheapest",
    "--prefer-kubernetes",
    "--help", "-h",
    "--version", "-V",
}

# Subcommands that embed a manager without being the supervised daemon.
_MANAGER_COMMANDS = (
    ("blueprint", "service", "spawn"),
    ("blueprint", "debug", "spawn"),
    ("blueprint", "preregister"),
    ("harness", "up"),
    ("dev", "up"),
)
# Endings of the executables manager_kind can accept, as a cheap first test.
_MANAGER_EXECUTABLE_ENDINGS = ("blueprint-manager", "cargo-tangle", "cargo", " (deleted)")
_SUBCOMMAND_ALIASES = {"bp": "blueprint", "r": "run", "pre": "preregister"}

# Environment variables that carry blueprint coordinates; the manager sets
# them for every instance it spawns.
COORDINATE_ENVIRONMENT = (
    "BLUEPRINT_ID", "SERVICE_ID", "PROTOCOL", "TANGLE_CONTRACT", "STAKING_CONTRACT",
    "STATUS_REGISTRY_CONTRACT", "BRIDGE_SOCKET_PATH",
)
# Options of the instance runner (`crates/runner/src/config.rs`) and of
# blueprint templates that carry blueprint coordinates.
_COORDINATE_OPTIONS = {
    "--blueprint-id", "--service-id", "--keystore-uri", "--chain", "--protocol",
}
_SVC_LABEL = re.compile(r"^svc-(?P<blueprint>[0-9]+)-(?P<service>[0-9]+)$")
_BRIDGE_SOCKET = re.compile(r"svc-(?P<blueprint>[0-9]+)-(?P<service>[0-9]+)/svc-(?P=blueprint)-(?P=service)\.sock$")

# clap 4's FalseyValueParser: these values, in any case, turn a boolean
# switch off; every other value turns it on.
_FALSE_VALUES = {"", "0", "n", "no", "f", "false", "off"}


def is_truthy(value: str | None) -> bool:
    """Return how clap reads a boolean switch from the environment."""
    if value is None:
        return False
    return value.strip().lower() not in _FALSE_VALUES


def _manager_words(argv: list[str]) -> list[str]:
    """Return the subcommand words of a cargo-tangle argv, aliases resolved.

    cargo passes the subcommand name as argv[1] when run as `cargo tangle`,
    so a leading `tangle` is skipped, as cargo-tangle's own `collect_args` does.
    """
    words = list(argv[1:])
    if words and words[0] == "tangle":
        words = words[1:]
    resolved: list[str] = []
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
            continue
        if word.startswith("-"):
            if resolved:
                break
            if word in _TOP_LEVEL_OPTIONS_WITH_VALUE:
                skip_value = True
            continue
        resolved.append(_SUBCOMMAND_ALIASES.get(word, word) if len(resolved) < 3 else word)
        if len(resolved) == 3:
            break
    return resolved


def manager_kind(executable: str, argv: list[str], through_cargo: bool = False) -> str | None:
    """Classify a process or ExecStart as "daemon", "command" or None.

    `executable` is the path or basename of the executable. With
    `through_cargo`, a `cargo tangle ...` command line counts as cargo-tangle,
    as in an ExecStart. A running `cargo` process is never the manager: on
    Unix cargo replaces itself with cargo-tangle through exec.
    """
    # Every process of a host passes through here, and almost none is one.
    if not executable.endswith(_MANAGER_EXECUTABLE_ENDINGS):
        return None
    name = posixpath.basename(executable.removesuffix(" (deleted)"))
    if name == "blueprint-manager":
        return "daemon"
    if through_cargo and name == "cargo" and len(argv) > 1 and argv[1] == "tangle":
        name = "cargo-tangle"
    if name != "cargo-tangle":
        return None
    words = _manager_words(argv)
    if words[:2] == ["blueprint", "run"]:
        return "daemon"
    for command in _MANAGER_COMMANDS:
        if tuple(words[: len(command)]) == command:
            return "command"
    return None


def manager_command_name(argv: list[str]) -> str:
    """Return the subcommand words of a manager command, such as "harness up"."""
    return " ".join(_manager_words(argv))


def manager_options(
    executable: str,
    argv: list[str],
    run_options_with_value: set[str] | None = None,
    run_switches: set[str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """Split a manager daemon's argv into known options and unknown words.

    Returns a mapping from long option name to value (switches map to "")
    and the list of words the daemon does not accept, in argv order.
    `run_options_with_value` and `run_switches` replace the built-in
    `blueprint run` flag set, for example with flags read from the installed
    cargo-tangle's `--help`; they do not apply to `blueprint-manager`.
    """
    name = posixpath.basename(executable)
    standalone = name == "blueprint-manager"
    if standalone:
        with_value, switches, start = STANDALONE_OPTIONS_WITH_VALUE, STANDALONE_SWITCHES, 1
    else:
        with_value = BLUEPRINT_RUN_OPTIONS_WITH_VALUE if run_options_with_value is None else run_options_with_value
        switches = BLUEPRINT_RUN_SWITCHES if run_switches is None else run_switches
        start = _index_after_run(argv)
    options: dict[str, str] = {}
    unknown: list[str] = []
    index = start
    while index < len(argv):
        word = argv[index]
        flag, equals, inline_value = word.partition("=")
        if flag in with_value:
            if equals:
                value = inline_value
            elif index + 1 < len(argv):
                index += 1
                value = argv[index]
            else:
                value = ""
            options[_long_name(flag, standalone)] = value
        elif flag in switches and not equals:
            options[_long_name(flag, standalone)] = ""
        elif standalone and re.fullmatch(r"-v+", word):
            options["--verbose"] = word
        else:
            unknown.append(word)
        index += 1
    return options, unknown


def _index_after_run(argv: list[str]) -> int:
    seen_blueprint = False
    for index, word in enumerate(argv[1:], start=1):
        resolved = _SUBCOMMAND_ALIASES.get(word, word)
        if resolved == "blueprint":
            seen_blueprint = True
        elif resolved == "run" and seen_blueprint:
            return index + 1
    return len(argv)


_SHORT_TO_LONG_RUN = {
    "-p": "--protocol", "-k": "--keystore-path", "-w": "--network", "-d": "--data-dir",
    "-n": "--bootnodes", "-f": "--settings-file", "-h": "--help",
}
_SHORT_TO_LONG_STANDALONE = {
    "-c": "--blueprint-config", "-k": "--keystore-uri", "-d": "--data-dir", "-z": "--cache-dir",
    "-r": "--runtime-dir", "-s": "--preferred-source", "-t": "--test-mode", "-h": "--help",
    "-V": "--version", "--id": "--instance-id",
}


def _long_name(flag: str, standalone: bool) -> str:
    table = _SHORT_TO_LONG_STANDALONE if standalone else _SHORT_TO_LONG_RUN
    return table.get(flag, flag)


def has_run_subcommand(argv: list[str]) -> bool:
    """Return True when the first non-option word after argv[0] is `run`.

    `cargo run --bin x -- run` counts too: the word after `--` is the
    program's own subcommand.
    """
    words = argv[1:]
    if "--" in words:
        after = words[words.index("--") + 1:]
        if after and after[0] == "run":
            return True
    for word in words:
        if word.startswith("-"):
            continue
        return word == "run"
    return False


def argv_test_mode(argv: list[str]) -> bool:
    """Return True when an instance or standalone manager argv turns on test mode."""
    return any(word in ("-t", "--test-mode") or word.startswith("--test-mode=") for word in argv[1:])


def argv_coordinates(argv: list[str]) -> dict[str, str]:
    """Return coordinate options found in argv, keyed by option name without dashes."""
    found: dict[str, str] = {}
    for index, word in enumerate(argv[1:], start=1):
        flag, equals, value = word.partition("=")
        if flag not in _COORDINATE_OPTIONS:
            continue
        if not equals:
            value = argv[index + 1] if index + 1 < len(argv) else ""
        found[flag.lstrip("-").replace("-", "_")] = value
    return found


def has_coordinates(argv: list[str], environment: dict[str, str]) -> bool:
    """Return True when the environment or argv carries blueprint coordinates."""
    return any(name in environment for name in COORDINATE_ENVIRONMENT) or bool(argv_coordinates(argv))


def argv_is_instance(
    argv: list[str],
    environment: dict[str, str],
    instance_binaries: set[str] | frozenset[str] = frozenset(),
    cache_roots: set[str] | None = None,
) -> bool:
    """Apply the instance tests to an argv and the environment it starts with.

    Not a manager, and one of: the subcommand `run` with blueprint
    coordinates in the environment or argv; numeric `BLUEPRINT_ID` and
    `SERVICE_ID` in the environment; an executable under a manager cache
    `svc-B-S/` directory; or an executable basename on the configured list.
    """
    if not argv or manager_kind(argv[0], argv, through_cargo=True) is not None:
        return False
    executable = argv[0]
    if has_run_subcommand(argv) and has_coordinates(argv, environment):
        return True
    if _numeric(environment.get("BLUEPRINT_ID")) and _numeric(environment.get("SERVICE_ID")):
        return True
    if posixpath.isabs(executable) and in_manager_cache(executable, cache_roots):
        return True
    return posixpath.basename(executable) in instance_binaries


def _numeric(value: str | None) -> bool:
    return value is not None and value.isdigit()


def may_be_blueprint_process(executable: str, argv: list[str], environment: dict[str, str],
                             instance_binaries: set[str] | frozenset[str] = frozenset()) -> bool:
    """Return True when a process could be a manager, a manager command, an instance or an instance's helper.

    Broader than the classification of a scan: any blueprint coordinate in
    the environment or argv, any `svc-` directory in the executable's path,
    a manager executable or a configured instance name. A process that fails
    every test cannot be any of these, whatever the rest of the host shows.
    """
    if manager_kind(executable, argv, through_cargo=True) is not None:
        return True
    if any(name in environment for name in COORDINATE_ENVIRONMENT) or argv_coordinates(argv):
        return True
    if "/svc-" in executable:
        return True
    return posixpath.basename(executable.removesuffix(" (deleted)")) in instance_binaries


def service_label(text: str) -> tuple[int, int] | None:
    """Return (blueprint, service) from a `svc-B-S` path component, if any."""
    for component in text.split("/"):
        match = _SVC_LABEL.match(component)
        if match:
            return int(match.group("blueprint")), int(match.group("service"))
    return None


def bridge_socket_service(path: str) -> tuple[int, int] | None:
    """Return (blueprint, service) from a bridge socket path `…/svc-B-S/svc-B-S.sock`."""
    match = _BRIDGE_SOCKET.search(path)
    if match is None:
        return None
    return int(match.group("blueprint")), int(match.group("service"))


def in_manager_cache(path: str, cache_roots: set[str] | None = None) -> bool:
    """Return True when an executable lies in a manager cache `svc-B-S/` directory.

    The default cache root is `<cache dir>/blueprint-manager`; the standalone
    manager may use another root (`-z`), passed in `cache_roots`.
    """
    # Every process is tested, and almost none has a `svc-` directory.
    if "/svc-" not in path:
        return False
    directory = posixpath.dirname(path)
    while directory not in ("", "/"):
        if _SVC_LABEL.match(posixpath.basename(directory)):
            root = posixpath.dirname(directory)
            if posixpath.basename(root) == "blueprint-manager":
                return True
            if cache_roots and root in cache_roots:
                return True
        parent = posixpath.dirname(directory)
        if parent == directory:
            # POSIX keeps a leading "//" as its own root, whose dirname is itself.
            break
        directory = parent
    return False


@dataclass(frozen=True)
class ManagerPaths:
    """Paths of a manager daemon's settings file, data dir, keystore, cache and runtime dirs."""

    settings_file: str | None
    settings_kind: str
    data_dir: str | None
    keystore: str | None
    cache_root: str | None
    runtime_root: str | None


def manager_paths(executable: str, argv: list[str], cwd: str | None, env: dict[str, str]) -> ManagerPaths:
    """Derive a manager's directories the way cargo-tangle and the manager do.

    Relative paths and defaults are resolved against the manager's working
    directory. When that is unknown (None, such as an unreadable
    /proc/PID/cwd), they are None: the manager resolved them against a
    directory the doctor cannot name.
    cargo-tangle always uses the default cache and runtime dirs: the cache is
    `$XDG_CACHE_HOME` or `$HOME/.cache`, and the runtime dir is
    `$XDG_RUNTIME_DIR` only, falling back to `./blueprint-manager/run`
    (the `dirs` 6.0 crate on Linux). A system service has no XDG_RUNTIME_DIR.
    """
    options, _unknown = manager_options(executable, argv)
    standalone = posixpath.basename(executable) == "blueprint-manager"

    def absolute(path: str) -> str | None:
        if posixpath.isabs(path):
            return posixpath.normpath(path)
        if cwd is None:
            return None
        return posixpath.normpath(posixpath.join(cwd, path))

    home = env.get("HOME")
    cache_base = env.get("XDG_CACHE_HOME") or (posixpath.join(home, ".cache") if home else None)
    default_cache = posixpath.join(cache_base, "blueprint-manager") if cache_base else None
    runtime_base = env.get("XDG_RUNTIME_DIR")
    default_runtime = (
        posixpath.join(runtime_base, "blueprint-manager") if runtime_base else absolute("blueprint-manager/run")
    )

    if standalone:
        settings = options.get("--blueprint-config")
        return ManagerPaths(
            settings_file=absolute(settings) if settings else None,
            settings_kind="toml",
            data_dir=absolute(options.get("--data-dir") or "./data"),
            keystore=absolute(options.get("--keystore-uri") or "./keystore"),
            cache_root=absolute(options["--cache-dir"]) if options.get("--cache-dir") else default_cache,
            runtime_root=absolute(options["--runtime-dir"]) if options.get("--runtime-dir") else default_runtime,
        )
    return ManagerPaths(
        settings_file=absolute(options.get("--settings-file") or "./settings.env"),
        settings_kind="env",
        data_dir=absolute(options.get("--data-dir") or "./data"),
        keystore=absolute(options.get("--keystore-path") or "./keystore"),
        cache_root=default_cache,
        runtime_root=default_runtime,
    )
