"""Every case in the shared case folder must reach the verdict its header states."""

from __future__ import annotations

import pytest

from bpm_doctor.diagnose import diagnose
from tests.support import hostsnap

CASES = hostsnap.case_files()
SECRET_FIXTURE = "0xREDACTED_FIXTURE_VALUE"


def test_case_folder_is_present():
    assert CASES, f"no cases found in {hostsnap.cases_dir()}; set BPM_DOCTOR_CASES"


def _findings(case: hostsnap.Case):
    config = case.config()
    if case.is_host:
        findings, _view = diagnose(hostsnap.load(case.path), config)
        return findings
    from bpm_doctor.lint import lint_paths

    return lint_paths([str(case.path)], config).findings


@pytest.mark.parametrize("path", CASES, ids=[path.name for path in CASES])
def test_case_verdict(path):
    case = hostsnap.read_case(path)
    assert case.expectations, f"{path.name} has no expect lines"
    findings = _findings(case)
    failures = hostsnap.check(case, findings)
    assert not failures, "\n".join(failures + ["findings:"] + [f"  {f.severity.label} {f.id} pid={f.pid} unit={f.unit} path={f.path} line={f.line}: {f.summary}" for f in findings])


@pytest.mark.parametrize("path", CASES, ids=[path.name for path in CASES])
def test_case_findings_never_show_fixture_secret(path):
    case = hostsnap.read_case(path)
    for finding in _findings(case):
        for value in vars(finding).values():
            assert SECRET_FIXTURE not in str(value)
