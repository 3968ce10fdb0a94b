"""An orphan's relative BRIDGE_SOCKET_PATH is resolved in its cwd to show which pid owns the socket now."""

from bpm_doctor import snapshot
from bpm_doctor.config import Config
from bpm_doctor.diagnose.instances import check_orphans
from bpm_doctor.diagnose.view import build

_HOST = """#=== proc 2790
ppid: 1
exe: /opt/q/quill
cwd: /srv/bp
argv: /opt/q/quill run --pretty -vv
env: BLUEPRINT_ID=21
env: SERVICE_ID=5
env: BRIDGE_SOCKET_PATH={socket}
#=== proc 3001
ppid: 1
exe: /root/.cargo/bin/cargo-tangle
cwd: /srv/bp
argv: cargo-tangle blueprint run
#=== listen
unix /srv/bp/blueprint-manager/run/svc-21-5/svc-21-5.sock pid=3001
"""


def _orphan_evidence(socket: str) -> list[str]:
    view = build(snapshot.parse(_HOST.format(socket=socket)), Config())
    findings = check_orphans(view)
    assert [finding.pid for finding in findings] == [2790]
    return findings[0].evidence


def test_relative_socket_shows_new_owner():
    evidence = _orphan_evidence("./blueprint-manager/run/svc-21-5/svc-21-5.sock")
    assert "its bridge socket now belongs to pid 3001" in evidence


def test_absolute_socket_shows_new_owner():
    evidence = _orphan_evidence("/srv/bp/blueprint-manager/run/svc-21-5/svc-21-5.sock")
    assert "its bridge socket now belongs to pid 3001" in evidence
