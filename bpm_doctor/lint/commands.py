"""Find the programs a command line really starts, through wrappers.

A deploy script rarely starts the instance bare: it goes through `nohup`,
`exec`, `sudo -u`, `env NAME=...`, `tmux new-session -d '...'`,
`screen -dmS`, `sh -c '...'`, `systemd-run`, `docker run` or `cargo run --
run`. `expand` peels these off and returns each program with the
environment set for it alone and the wrappers it went through. `ShellState`
walks a script in text order and tracks the variables it assigns and
exports, so a later command gets the environment an operator's shell would pass on.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from bpm_doctor.lint import shell

# Maximum nesting of wrappers and command strings (`sh -c 'tmux new "sh -c ..."'`) that `expand` follows.
_MAX_DEPTH = 4

# Wrappers that run the rest of their arguments as a command, with the
# options that take a value, and how many positional words come before the
# command (the priority of `chrt`, the duration of `timeout`).
_WRAPPERS: dict[str, tuple[set[str], int]] = {
    "exec": ({"-a"}, 0),
    "nohup": (set(), 0),
    "setsid": (set(), 0),
    "command": (set(), 0),
    "builtin": (set(), 0),
    "time": ({"-o", "-f", "--output", "--format"}, 0),
    "nice": ({"-n", "--adjustment"}, 0),
    "ionice": ({"-c", "-n", "--class", "--classdata"}, 0),
    "chrt": (set(), 1),
    "taskset": (set(), 1),
    "stdbuf": ({"-i", "-o", "-e", "--input", "--output", "--error"}, 0),
    "timeout": ({"-s", "-k", "--signal", "--kill-after"}, 1),
    "sudo": ({"-u", "-g", "-C", "-D", "-p", "-r", "-t", "-U", "-T", "-h", "--user", "--group",
              "--chdir", "--prompt", "--role", "--type", "--other-user", "--command-timeout", "--host"}, 0),
    "doas": ({"-u", "-C"}, 0),
    "runuser": ({"-u", "-g", "-G", "-s", "-w", "--user", "--group", "--supp-group", "--shell",
                 "--whitelist-environment"}, 0),
    "env": ({"-u", "-C", "--unset", "--chdir"}, 0),
    "gosu": (set(), 1),
    "su-exec": (set(), 1),
    "chpst": ({"-u", "-U", "-e", "-n", "-l", "-L", "-m", "-d", "-o", "-p", "-f", "-c", "-r", "-t"}, 0),
    "tini": ({"-p", "-e"}, 0),
    "dumb-init": ({"-r", "--rewrite"}, 0),
    "catatonit": (set(), 0),
    "daemonize": ({"-c", "-e", "-E", "-o", "-p", "-l", "-u"}, 0),
    "systemd-run": ({"-u", "--unit", "-p", "--property", "--description", "--slice", "-E", "--setenv",
                     "--uid", "--gid", "--nice", "--working-directory", "-M", "--machine", "-H", "--host",
                     "--on-active", "--on-boot", "--on-startup", "--on-unit-active", "--on-unit-inactive",
                     "--on-calendar", "--timer-property", "--path-property", "--socket-property",
                     "--service-type", "--expand-environment"}, 0),
}
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh"}
_CONTAINER_ENGINES = {"docker", "podman", "nerdctl"}
# `docker run` options that take a value; any other option is read as a switch.
_DOCKER_RUN_OPTIONS_WITH_VALUE = {
    "-a", "--attach", "--add-host", "--blkio-weight", "--cap-add", "--cap-drop", "--cgroup-parent",
    "--cgroupns", "--cidfile", "--cpu-period", "--cpu-quota", "--cpu-shares", "-c", "--cpus",
    "--cpuset-cpus", "--cpuset-mems", "--device", "--device-cgroup-rule", "--dns", "--dns-option",
    "--dns-search", "--domainname", "-e", "--env", "--entrypoint", "--env-file", "--expose", "--gpus",
    "--group-add", "--health-cmd", "--health-interval", "--health-retries", "--health-start-period",
    "--health-timeout", "-h", "--hostname", "--ip", "--ip6", "--ipc", "--isolation", "--kernel-memory",
    "-l", "--label", "--label-file", "--link", "--log-driver", "--log-opt", "--mac-address", "-m",
    "--memory", "--memory-reservation", "--memory-swap", "--mount", "--name", "--network", "--net",
    "--network-alias", "--oom-score-adj", "--pid", "--pids-limit", "--platform", "-p", "--publish",
    "--pull", "--restart", "--runtime", "--security-opt", "--shm-size", "--stop-signal",
    "--stop-timeout", "--storage-opt", "--sysctl", "--tmpfs", "--ulimit", "-u", "--user", "--userns",
    "--uts", "-v", "--volume", "--volume-driver", "--volumes-from", "-w", "--workdir",
}
# Keys that tmux sends to end a typed command line.
_TMUX_ENTER_KEYS = {"Enter", "C-m", "KPEnter", "C-j"}
_TMUX_OPTIONS_WITH_VALUE = {"-c", "-e", "-F", "-n", "-s", "-t", "-x", "-y", "-f", "-l", "-p", "-T", "-N"}
_SCREEN_OPTIONS_WITH_VALUE = {"-S", "-c", "-t", "-T", "-h", "-e", "-p", "-Logfile", "-X"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")


@dataclass
class Launch:
    """A program a command line starts, after its wrappers are peeled off.

    `env` contains the variables set for this program alone (`NAME=v cmd`,
    `env NAME=v`, `docker run -e`). `via` lists the wrappers, outermost
    first, such as "nohup", "tmux", "sh -c", "docker run".
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    via: list[str] = field(default_factory=list)
    background: bool = False

    @property
    def in_container(self) -> bool:
        return any(step.endswith(" run") and step.split()[0] in _CONTAINER_ENGINES for step in self.via)

    @property
    def launcher(self) -> str:
        """Return the catalogue's launcher word for how this program was started."""
        if self.in_container:
            return "container"
        for name in ("tmux", "screen"):
            if name in self.via:
                return name
        if "systemd-run" in self.via:
            return "systemd-unit"
        return "shell"

    def how(self) -> str:
        """Return a short phrase for the wrappers, such as "through nohup, in the background"."""
        words = [f"through {step}" for step in self.via if step not in ("exec", "command", "builtin")]
        if self.background:
            words.append("in the background")
        return ", ".join(words)


def expand(words: list[str], env: dict[str, str] | None = None, depth: int = 0) -> list[Launch]:
    """Return the programs that a command's words start, through any wrappers."""
    env = dict(env or {})
    if not words or depth > _MAX_DEPTH:
        return []
    name = posixpath.basename(words[0])
    rest = words[1:]
    if name in _WRAPPERS:
        return _expand_wrapper(name, rest, env, depth)
    if name in _SHELLS:
        return _expand_shell(name, rest, env, depth)
    if name in ("su", "runuser") and "-c" in rest:
        return _expand_command_string(name, rest, env, depth)
    if name == "eval":
        return _within(name, _launches_of_text(" ".join(rest), env, depth), env)
    if name == "tmux":
        return _within("tmux", _expand_tmux(rest, env, depth), env)
    if name == "screen":
        return _within("screen", _expand_screen(rest, env, depth), env)
    if name == "start-stop-daemon":
        return _expand_start_stop_daemon(rest, env, depth)
    if name in _CONTAINER_ENGINES:
        return _expand_container(name, rest, env)
    if name == "cargo":
        return [Launch(_cargo_program(words), env)]
    return [Launch(list(words), env)]


def _within(step: str, launches: list[Launch], env: dict[str, str]) -> list[Launch]:
    for launch in launches:
        launch.via.insert(0, step)
        launch.env = {**env, **launch.env}
    return launches


def _skip_options(words: list[str], with_value: set[str], positionals: int = 0) -> tuple[int, list[str]]:
    """Return the index where the wrapped command starts, and the option words before it."""
    index = 0
    options: list[str] = []
    while index < len(words):
        word = words[index]
        if word == "--":
            index += 1
            break
        if not word.startswith("-") or word == "-":
            break
        options.append(word)
        flag = word.partition("=")[0]
        if "=" not in word and (flag in with_value or _short_cluster_takes_value(word, with_value)):
            index += 1
            if index < len(words):
                options.append(words[index])
        index += 1
    index += positionals
    return index, options


def _short_cluster_takes_value(word: str, with_value: set[str]) -> bool:
    # `-dmS name`: in a cluster of short options, the last one may take a value.
    return len(word) > 2 and word[1] != "-" and f"-{word[-1]}" in with_value


def _expand_wrapper(name: str, rest: list[str], env: dict[str, str], depth: int) -> list[Launch]:
    with_value, positionals = _WRAPPERS[name]
    start, options = _skip_options(rest, with_value, positionals)
    for index, option in enumerate(options):
        if name in ("systemd-run", "daemonize") and option in ("-E", "--setenv") and index + 1 < len(options):
            _add_assignment(env, options[index + 1])
        elif name == "systemd-run" and option.startswith("--setenv="):
            _add_assignment(env, option.partition("=")[2])
    command = rest[start:]
    if name in ("env", "sudo"):
        while command and "=" in command[0] and _ENV_NAME.match(command[0].partition("=")[0]):
            _add_assignment(env, command.pop(0))
    return _within(name, expand(command, env, depth + 1), env)


def _add_assignment(env: dict[str, str], word: str) -> None:
    name, equals, value = word.partition("=")
    if _ENV_NAME.match(name):
        env[name] = value if equals else ""


def _expand_shell(name: str, rest: list[str], env: dict[str, str], depth: int) -> list[Launch]:
    index = 0
    has_command_string = False
    while index < len(rest) and rest[index][:1] in ("-", "+") and rest[index] != "--":
        word = rest[index]
        if word in ("-o", "+o"):
            index += 1
        elif not word.startswith("--") and "c" in word[1:]:
            has_command_string = True
        index += 1
    if not has_command_string or index >= len(rest):
        return []
    return _within(f"{name} -c", _launches_of_text(rest[index], env, depth), env)


def _expand_command_string(name: str, rest: list[str], env: dict[str, str], depth: int) -> list[Launch]:
    position = rest.index("-c")
    if position + 1 >= len(rest):
        return []
    return _within(name, _launches_of_text(rest[position + 1], env, depth), env)


def _launches_of_text(text: str, env: dict[str, str], depth: int) -> list[Launch]:
    launches: list[Launch] = []
    for command in shell.parse(text):
        inner_env = dict(env)
        for assigned_name, value in command.assignments:
            inner_env[assigned_name] = value
        for launch in expand(command.words, inner_env, depth + 1):
            launch.background = launch.background or command.background
            launches.append(launch)
    return launches


def _expand_tmux(rest: list[str], env: dict[str, str], depth: int) -> list[Launch]:
    # tmux [global options] new-session|new-window|split-window|respawn-pane [options] [shell-command]
    index, _options = _skip_options(rest, {"-L", "-S", "-f", "-c", "-T"})
    if index >= len(rest):
        return []
    subcommand = rest[index]
    arguments = rest[index + 1:]
    if subcommand in ("new-session", "new", "new-window", "neww", "split-window", "splitw",
                      "respawn-pane", "respawnp", "respawn-window", "respawnw"):
        start, options = _skip_options(arguments, _TMUX_OPTIONS_WITH_VALUE)
        tmux_env = dict(env)
        for position, option in enumerate(options):
            if option == "-e" and position + 1 < len(options):
                _add_assignment(tmux_env, options[position + 1])
        text = " ".join(arguments[start:])
        return _launches_of_text(text, tmux_env, depth) if text else []
    if subcommand in ("send-keys", "send"):
        start, _options = _skip_options(arguments, {"-t", "-N"})
        keys = [word for word in arguments[start:] if word not in _TMUX_ENTER_KEYS]
        return _launches_of_text(" ".join(keys), env, depth)
    return []


def _expand_screen(rest: list[str], env: dict[str, str], depth: int) -> list[Launch]:
    if "-X" in rest:
        position = rest.index("-X")
        if rest[position + 1:position + 2] == ["stuff"] and position + 2 < len(rest):
            text = rest[position + 2].replace("\\n", "\n").replace("^M", "\n")
            return _launches_of_text(text, env, depth)
        return []
    start, _options = _skip_options(rest, _SCREEN_OPTIONS_WITH_VALUE)
    return expand(rest[start:], env, depth + 1)


def _expand_start_stop_daemon(rest: list[str], env: dict[str, str], depth: int) -> list[Launch]:
    program = None
    arguments: list[str] = []
    background = False
    index = 0
    while index < len(rest):
        word = rest[index]
        flag, equals, value = word.partition("=")
        if word == "--":
            arguments = rest[index + 1:]
            break
        if flag in ("-x", "--exec", "-a", "--startas"):
            if not equals and index + 1 < len(rest):
                index += 1
                value = rest[index]
            program = program if flag in ("-x", "--exec") and program else value
        elif word in ("-b", "--background"):
            background = True
        index += 1
    if program is None:
        return []
    launches = expand([program, *arguments], env, depth + 1)
    for launch in launches:
        launch.via.insert(0, "start-stop-daemon")
        launch.background = launch.background or background
    return launches


def _expand_container(engine: str, rest: list[str], env: dict[str, str]) -> list[Launch]:
    if rest[:2] == ["container", "run"]:
        rest = rest[1:]
    if not rest or rest[0] not in ("run", "create"):
        return []
    arguments = rest[1:]

    container_env: dict[str, str] = {}
    entrypoint: list[str] = []
    background = False
    index = 0
    while index < len(arguments):
        word = arguments[index]
        if not word.startswith("-") or word == "-":
            break
        flag, equals, value = word.partition("=")
        if flag in _DOCKER_RUN_OPTIONS_WITH_VALUE or _short_cluster_takes_value(word, {"-e", "-v", "-p"}):
            if not equals:
                index += 1
                value = arguments[index] if index < len(arguments) else ""
            if flag in ("-e", "--env") or (not flag.startswith("--") and flag.endswith("e")):
                _add_assignment(container_env, value)
            elif flag == "--entrypoint":
                entrypoint = value.split()
        elif flag in ("-d", "--detach") or (not flag.startswith("--") and "d" in flag[1:]):
            background = True
        index += 1

    image = arguments[index] if index < len(arguments) else ""
    command = arguments[index + 1:]
    argv = entrypoint + command
    if not entrypoint and (not command or command[0] == "run" or command[0].startswith("-")):
        argv = [image, *command]
    if not argv or not argv[0]:
        return []
    return [Launch(argv, container_env, [f"{engine} run"], background)]


def _cargo_program(words: list[str]) -> list[str]:
    """Return the argv `cargo run --bin NAME -- ARGS` starts, or the cargo command itself.

    `cargo run` builds and starts a binary of the workspace, so the program
    is the binary named by `--bin` or `-p`, with the words after `--`.
    """
    if len(words) < 2 or words[1] != "run":
        return list(words)
    binary = "cargo-run"
    arguments: list[str] = []
    index = 2
    while index < len(words):
        word = words[index]
        if word == "--":
            arguments = words[index + 1:]
            break
        flag, equals, value = word.partition("=")
        if flag in ("--bin", "-p", "--package", "--example"):
            if not equals and index + 1 < len(words):
                index += 1
                value = words[index]
            binary = value or binary
        index += 1
    return [binary, *arguments]


@dataclass
class Variable:
    """A shell variable's latest literal value and the line that assigned it."""

    value: str
    line: int


@dataclass
class Step:
    """One command of a walk, with what it starts and the exported environment it inherits."""

    command: shell.Command
    launches: list[Launch]
    inherited: dict[str, str]


@dataclass
class ShellState:
    """Variables a shell text assigns and exports, followed in text order.

    Control flow is ignored: every assignment counts, in the order written.
    """

    variables: dict[str, Variable] = field(default_factory=dict)
    exported: set[str] = field(default_factory=set)
    export_all: bool = False

    def walk(self, commands: list[shell.Command]) -> Iterator[Step]:
        for command in commands:
            inherited = {name: self.variables[name].value if name in self.variables else ""
                         for name in self.exported}
            if not command.words:
                for name, value in command.assignments:
                    self._assign(name, value, command.line, exported=self.export_all)
                yield Step(command, [], inherited)
                continue
            self._builtin(command)
            prefix = dict(command.assignments)
            launches = []
            for launch in expand([self.resolve_word(command.words[0]), *command.words[1:]], prefix):
                launch.background = launch.background or command.background
                launches.append(launch)
            yield Step(command, launches, inherited)

    def resolve_word(self, word: str) -> str:
        """Replace a word that is only `$NAME` or `${NAME}` with the variable's literal value."""
        match = _VARIABLE.match(word)
        if match is None:
            return word
        variable = self.variables.get(match.group(1) or match.group(2))
        if variable is None or "$" in variable.value or "`" in variable.value:
            return word
        return variable.value

    def _assign(self, name: str, value: str, line: int, exported: bool) -> None:
        self.variables[name] = Variable(value, line)
        if exported:
            self.exported.add(name)

    def _builtin(self, command: shell.Command) -> None:
        words = command.words
        name = words[0]
        if name in ("export", "declare", "typeset", "local", "readonly"):
            exported = name == "export" or any(word.startswith("-") and "x" in word for word in words[1:])
            for word in words[1:]:
                if word.startswith("-"):
                    continue
                assigned, equals, value = word.partition("=")
                if not _ENV_NAME.match(assigned):
                    continue
                if equals:
                    self._assign(assigned, value, command.line, exported or self.export_all)
                elif exported:
                    self.exported.add(assigned)
        elif name == "unset":
            for word in words[1:]:
                self.variables.pop(word, None)
                self.exported.discard(word)
        elif name == "set":
            for word in words[1:]:
                if word in ("-a", "-o allexport") or (word.startswith("-") and "a" in word[1:]):
                    self.export_all = True
                elif word.startswith("+") and "a" in word[1:]:
                    self.export_all = False
