"""`bpm-doctor lint`: apply the host rules to deploy files in a repository.

`lint_paths` finds the files and walks directories. It reads unit files
first, then compose files and Dockerfiles, then settings, scripts and
documents, because later kinds use facts from earlier ones. It runs the
linter for each file's kind and applies inline suppressions.

`secret-file-permissions` reads the file mode only outside a git work tree:
git records no read permissions (only the executable bit), so a checkout's
modes come from the umask of whoever cloned it and say nothing about the
host. Run the lint on the host's own directories (`/etc`, `/srv`) to check
modes there.
"""

from __future__ import annotations

import os
import posixpath
import stat
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from bpm_doctor import unitfile
from bpm_doctor.config import Config
from bpm_doctor.lint import compose, discover, dockerfile, envfiles, markdown, scripts, suppression, units
from bpm_doctor.lint.context import LintContext
from bpm_doctor.lint.manager_help import ManagerFlags, accepted_flags
from bpm_doctor.model import Finding

__all__ = ["LintResult", "lint_paths"]

# Files whose facts other linters use are read first.
_ORDER = {"unit": 0, "compose": 1, "yaml": 1, "dockerfile": 1, "env": 2, "script": 3, "markdown": 4}


@dataclass
class LintResult:
    """The outcome of one lint run.

    `findings` are the active findings, each with `path` and, where it
    applies, `line`. `suppressed` are the findings silenced by an inline
    comment: their `suppressed` is True and `allowed_reason` is the
    comment's reason. `errors` has one `file: message` line per path that
    could not be checked, and `files` lists the files that were checked.
    """

    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Finding] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def lint_paths(paths: list[str], config: Config,
               flags_loader: Callable[[], ManagerFlags] = accepted_flags) -> LintResult:
    """Lint files and directories and return a `LintResult`.

    `flags_loader` returns the flags `blueprint run` accepts. The context
    caches its result, so it runs at most once, and only when a file
    starts the manager.
    """
    sources, errors = discover.walk(paths)
    result = LintResult(errors=errors)
    ctx = LintContext(config, flags_loader)
    texts: dict[str, str] = {}
    for source in sorted(sources, key=lambda s: _ORDER.get(s.kind, 9)):
        try:
            texts[source.path] = discover.read_text(source.path)
        except (OSError, ValueError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            result.errors.append(f"{source.path}: cannot read: {reason}")
    checked = [source for source in sorted(sources, key=lambda s: _ORDER.get(s.kind, 9)) if source.path in texts]
    result.files = [source.path for source in checked]

    unit_groups = _unit_groups([s.path for s in checked if s.kind == "unit"], texts)
    for files in unit_groups.values():
        units.collect_manager_facts(files, ctx)
    for source in checked:
        if source.kind in ("compose", "yaml") and discover.is_compose_text(texts[source.path]):
            compose.collect_container_scripts(texts[source.path], ctx)
        elif source.kind == "dockerfile":
            dockerfile.collect_container_scripts(texts[source.path], ctx)

    per_file: dict[str, list[Finding]] = {source.path: [] for source in checked}
    anchors: dict[str, dict[int, int]] = {}
    linted = set(per_file)
    for name, files in unit_groups.items():
        for finding in _guarded(files[-1].path, ctx, lambda: units.lint_unit(files, ctx, linted, name[1])):
            per_file.setdefault(finding.path, []).append(finding)
    work_tree_cache: dict[str, bool] = {}
    for source in checked:
        if source.kind == "unit":
            continue
        text = texts[source.path]
        file_anchors: dict[int, int] = {}
        found = _guarded(source.path, ctx, lambda: _lint_file(source, text, ctx, file_anchors, work_tree_cache))
        per_file[source.path].extend(found)
        anchors[source.path] = file_anchors

    for path, findings in per_file.items():
        active, silenced, reasonless = suppression.apply(
            findings, texts[path], anchors.get(path), ctx.make, path,
        )
        result.findings.extend(active + reasonless)
        result.suppressed.extend(silenced)
    result.findings.sort(key=sort_key)
    result.suppressed.sort(key=sort_key)
    return result


def sort_key(finding: Finding) -> tuple:
    return (str(finding.path or ""), finding.line or 0, -int(finding.severity), finding.id)


def _lint_file(source: discover.SourceFile, text: str, ctx: LintContext, anchors: dict[int, int],
               work_tree_cache: dict[str, bool]) -> list[Finding]:
    path = source.path
    if source.kind == "env":
        return envfiles.lint_env(path, text, ctx, mode=_host_mode(path, work_tree_cache))
    if source.kind == "script":
        findings, script_anchors = scripts.lint_script(path, text, ctx)
        anchors.update(script_anchors)
        return findings
    if source.kind in ("compose", "yaml"):
        return compose.lint_compose(path, text, ctx) if discover.is_compose_text(text) else []
    if source.kind == "dockerfile":
        return dockerfile.lint_dockerfile(path, text, ctx)
    if source.kind == "markdown":
        findings, document_anchors = markdown.lint_markdown(path, text, ctx)
        anchors.update(document_anchors)
        return findings
    return []


def _host_mode(path: str, work_tree_cache: dict[str, bool]) -> int | None:
    """Return a file's permission bits when they are the host's, not a checkout's (see the module docstring)."""
    if discover.in_git_work_tree(path, work_tree_cache):
        return None
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _unit_groups(paths: list[str], texts: dict[str, str]) -> dict[tuple[str, str], list[unitfile.UnitFile]]:
    """Group unit fragments with the drop-ins beside them, fragment first, drop-ins by file name.

    A drop-in whose fragment was not given is read with the fragment from
    disk when it exists there, for context only.
    """
    groups: dict[tuple[str, str], dict[str, str]] = {}
    for path in paths:
        name = units.unit_name_of(path)
        if path.endswith(".conf"):
            base = os.path.dirname(os.path.dirname(path))
        else:
            base = os.path.dirname(path)
        groups.setdefault((base, name), {})[path] = texts[path]
    parsed: dict[tuple[str, str], list[unitfile.UnitFile]] = {}
    for (base, name), members in groups.items():
        fragment_path = os.path.join(base, name)
        fragments = [path for path in members if not path.endswith(".conf")]
        if not fragments and os.path.isfile(fragment_path):
            try:
                members[fragment_path] = discover.read_text(fragment_path)
                fragments = [fragment_path]
            except (OSError, ValueError):
                pass
        dropins = sorted((path for path in members if path.endswith(".conf")), key=os.path.basename)
        parsed[(base, name)] = [unitfile.parse(members[path], path) for path in fragments + dropins]
    return parsed


def _guarded(path: str, ctx: LintContext, check: Callable[[], list[Finding]]) -> list[Finding]:
    """Run one file's checks; a check that raises becomes a check-failed finding for that file."""
    try:
        return check()
    except Exception as error:  # noqa: BLE001 - one broken check must not hide the other files' findings
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f" at {frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else ""
        return [ctx.make(
            "check-failed",
            f"linting {posixpath.basename(path)} raised {type(error).__name__}{where}; its findings are missing",
            path=path,
        )]
