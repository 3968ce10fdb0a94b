"""Lint compose files: a service whose container runs the instance.

A service's program is its `entrypoint` followed by its `command`. Without
an `entrypoint` the image's own entrypoint is unknown, so a `command` that
starts with `run` or an option is read as arguments to it, and the image
name is used as the program name. The environment is `environment` plus
the `env_file` files that exist beside the compose file (they are
repository files). A string `entrypoint` or `command` is split into words the way
compose splits it, with shell quoting rules and no shell.
"""

from __future__ import annotations

import os
import posixpath
import shlex

from bpm_doctor.readfile import read_regular_file
from bpm_doctor import envfile
from bpm_doctor.lint import yamlish
from bpm_doctor.lint.commands import Launch, expand
from bpm_doctor.lint.context import LintContext, coordinates, pinned_names, show_command
from bpm_doctor.model import Finding


def collect_container_scripts(text: str, ctx: LintContext) -> None:
    """Record the scripts compose services run, so entrypoint scripts are known as such."""
    for _name, service in _services(text):
        for key in ("entrypoint", "command"):
            words = _words(service.get(key))
            if words:
                ctx.container_scripts.add(posixpath.basename(words[0]))


def _services(text: str) -> list[tuple[str, yamlish.Node]]:
    document = yamlish.load(text)
    services = document.get("services") if document is not None else None
    if services is None or not isinstance(services.value, dict):
        return []
    return [(name, node) for name, node in services.value.items() if isinstance(node.value, dict)]


def _words(node: yamlish.Node | None) -> list[str]:
    if node is None or node.value is None:
        return []
    if isinstance(node.value, list):
        return [str(item.value) for item in node.value if item is not None and isinstance(item.value, str)]
    if isinstance(node.value, str):
        try:
            return shlex.split(node.value)
        except ValueError:
            return node.value.split()
    return []


def _environment(service: yamlish.Node, base: str) -> tuple[dict[str, str], list[str]]:
    """Return the service's environment and the env_file paths that could not be read."""
    environment: dict[str, str] = {}
    unread: list[str] = []
    env_files = service.get("env_file")
    paths: list[str] = []
    if env_files is not None:
        items = env_files.value if isinstance(env_files.value, list) else [env_files]
        for item in items:
            if item is None:
                continue
            if isinstance(item.value, str):
                paths.append(item.value)
            elif isinstance(item.value, dict) and item.get("path") is not None:
                paths.append(str(item.get("path").value))
    for path in paths:
        full = os.path.join(base, path)
        try:
            text = read_regular_file(full, 1024 * 1024).decode("utf-8", errors="replace")
            environment.update(envfile.as_dict(envfile.parse_dotenv(text)))
        except OSError:
            unread.append(path)
    declared = service.get("environment")
    if declared is not None and isinstance(declared.value, list):
        for item in declared.value:
            if item is not None and isinstance(item.value, str):
                name, _equals, value = item.value.partition("=")
                environment[name.strip()] = value
    elif declared is not None and isinstance(declared.value, dict):
        for name, item in declared.value.items():
            environment[name] = "" if item is None or item.value is None else str(item.value)
    return environment, unread


def lint_compose(path: str, text: str, ctx: LintContext) -> list[Finding]:
    findings = []
    base = os.path.dirname(path)
    for name, service in _services(text):
        entrypoint_node = service.get("entrypoint")
        command_node = service.get("command")
        entrypoint = _words(entrypoint_node)
        command = _words(command_node)
        argv = entrypoint + command
        if not entrypoint and (not command or command[0] == "run" or command[0].startswith("-")):
            image = service.get("image")
            image_name = str(image.value) if image is not None and isinstance(image.value, str) else name
            argv = [image_name.rsplit("/", 1)[-1].split(":", 1)[0], *command]
        line_node = entrypoint_node if entrypoint else command_node or service
        environment, unread = _environment(service, base)
        for launch in expand(argv, environment):
            if ctx.is_manager(launch.argv):
                finding = ctx.unknown_flag_finding(launch.argv, path=path, line=line_node.line,
                                                   where=f"compose service {name}")
                if finding is not None:
                    findings.append(finding)
            elif ctx.is_instance(launch):
                findings.append(_container_finding(path, name, service, launch, line_node.line, unread, ctx))
    return findings


def _container_finding(path: str, name: str, service: yamlish.Node, launch: Launch, line: int,
                       unread: list[str], ctx: LintContext) -> Finding:
    evidence = [f"program: {show_command(launch.argv)}"]
    pinned = pinned_names(launch.env)
    if pinned:
        evidence.append(f"the service sets {', '.join(pinned)}")
    restart = service.get("restart")
    if restart is not None and isinstance(restart.value, str) and restart.value != "no":
        evidence.append(f"restart: {restart.value} starts it again after every reboot")
    if unread:
        evidence.append(f"env_file not found beside the compose file: {', '.join(unread)}")
    return ctx.make(
        "container-runs-instance",
        f"compose service {name} runs the instance binary {posixpath.basename(launch.argv[0])} in a container, "
        "outside the Blueprint Manager",
        path=path, line=line, launcher="container", binary=launch.argv[0], evidence=evidence,
        **coordinates(launch, launch.env),
    )
