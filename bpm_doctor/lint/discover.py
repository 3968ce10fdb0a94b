"""Find the files to lint and tell their kind from the name, or the content.

The kinds, and the names or content that select them:

- `unit`: `*.service`, `*.timer`, `*.socket`, drop-ins `*.service.d/*.conf`;
- `env`: `*.env`, `.env*`, files in a `default/` directory as in `/etc/default`;
- `script`: `*.sh`, `*.bash`, or a `#!` line naming sh, bash, dash, zsh or ksh;
- `compose`: `docker-compose*.yml`, `compose*.yml`, or any `*.yml`/`*.yaml`
  with a top-level `services:` key;
- `dockerfile`: `Dockerfile`, `Dockerfile.*`, `*.Dockerfile`, `Containerfile`;
- `markdown`: `*.md`, `*.markdown`.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass

from bpm_doctor.readfile import read_regular_file

SKIPPED_DIRECTORIES = {
    ".git", "node_modules", "target", ".venv", "venv", "__pycache__", ".tox", ".mypy_cache", ".pytest_cache",
    ".hypothesis", ".ruff_cache",
}
# Files larger than this are reported as not checked instead of being read.
MAX_FILE_BYTES = 8 * 1024 * 1024
_SHEBANG = re.compile(rb"^#![ \t]*\S*?(?:/|env[ \t]+(?:-\S+[ \t]+)*)(?:ba|da|z|k|a|mk)?sh\b")
_COMPOSE_SERVICES = re.compile(r"^services:[ \t]*(#.*)?$", re.MULTILINE)
_ENV_NAME = re.compile(r"(^\.env(\..*)?$)|(\.env$)|(\.env\.(example|sample|template|tmpl|dist|local)$)")


def kind_by_name(path: str) -> str | None:
    """Return the kind a file name alone implies, or None when the content must decide."""
    name = posixpath.basename(path)
    lower = name.lower()
    directory = posixpath.basename(posixpath.dirname(path))
    if lower.endswith((".service", ".timer", ".socket")):
        return "unit"
    if lower.endswith(".conf") and directory.endswith((".service.d", ".timer.d", ".socket.d")):
        return "unit"
    if _ENV_NAME.search(lower) or (directory == "default" and "." not in name):
        return "env"
    if lower.endswith((".sh", ".bash")):
        return "script"
    if lower.startswith(("docker-compose", "compose")) and lower.endswith((".yml", ".yaml")):
        return "compose"
    if name in ("Dockerfile", "Containerfile") or name.startswith(("Dockerfile.", "Containerfile.")) \
            or lower.endswith(".dockerfile"):
        return "dockerfile"
    if lower.endswith((".md", ".markdown")):
        return "markdown"
    return None


def kind_by_content(path: str, head: bytes) -> str | None:
    """Return the kind for a file the name leaves open: a YAML file or a script with a `#!` line."""
    if path.lower().endswith((".yml", ".yaml")):
        return "yaml"
    if _SHEBANG.match(head):
        return "script"
    return None


def is_compose_text(text: str) -> bool:
    return bool(_COMPOSE_SERVICES.search(text))


@dataclass
class SourceFile:
    """A file to lint: its path as the user gave it (or as found under a directory) and its kind."""

    path: str
    kind: str
    explicit: bool


def walk(paths: list[str]) -> tuple[list[SourceFile], list[str]]:
    """Return the lintable files under the given paths, and one error line per path that failed."""
    found: list[SourceFile] = []
    errors: list[str] = []
    seen: set[str] = set()
    for path in paths:
        if os.path.isdir(path):
            for directory, subdirectories, names in os.walk(path, onerror=lambda error: errors.append(
                    f"{error.filename}: cannot read directory: {error.strerror}")):
                subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
                for name in sorted(names):
                    _add(os.path.join(directory, name), False, found, errors, seen)
        elif os.path.lexists(path):
            _add(path, True, found, errors, seen)
        else:
            errors.append(f"{path}: not found")
    return found, errors


def _add(path: str, explicit: bool, found: list[SourceFile], errors: list[str], seen: set[str]) -> None:
    key = os.path.normpath(os.path.abspath(path))
    if key in seen:
        return
    seen.add(key)
    kind = kind_by_name(path)
    if kind is None:
        try:
            head = read_regular_file(path, 128)
        except OSError as error:
            if explicit:
                errors.append(f"{path}: cannot read: {error.strerror or error}")
            return
        kind = kind_by_content(path, head)
    if kind is None:
        if explicit:
            errors.append(f"{path}: not a file kind bpm-doctor lint reads (unit, env, shell script, compose, "
                          "Dockerfile, Markdown)")
        return
    found.append(SourceFile(path, kind, explicit))


def read_text(path: str) -> str:
    """Read a file as UTF-8, replacing undecodable bytes. Raises OSError, or ValueError when too large."""
    data = read_regular_file(path, MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return data.decode("utf-8", errors="replace")


def in_git_work_tree(path: str, cache: dict[str, bool]) -> bool:
    """Return True when a file lies in a git work tree (a `.git` entry in it or a parent directory).

    `cache` maps each directory already looked at to its result. Pass one
    dict per lint run.
    """
    directory = os.path.dirname(os.path.abspath(path))
    visited = []
    result = False
    while True:
        if directory in cache:
            result = cache[directory]
            break
        visited.append(directory)
        if os.path.exists(os.path.join(directory, ".git")):
            result = True
            break
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for entry in visited:
        cache[entry] = result
    return result
