"""Unit file parsing, continuations and drop-in merging."""

from bpm_doctor import unitfile

FRAGMENT = """[Unit]
Description=x
[Service]
# a comment
Environment=A=1 "B=two words"
ExecStart=/usr/bin/cargo-tangle blueprint run \\
  --data-dir /d \\
 

Restart=always
KillMode=mixed
"""


def test_continuation_stops_at_whitespace_line():
    unit = unitfile.effective("m.service", [unitfile.parse(FRAGMENT, "/m.service")])
    assert unit.exec_start[0].argv == ["/usr/bin/cargo-tangle", "blueprint", "run", "--data-dir", "/d"]
    assert unit.get("Restart") == "always"


def test_environment_values_are_split_like_systemd():
    unit = unitfile.effective("m.service", [unitfile.parse(FRAGMENT, "/m.service")])
    assert unit.environment == {"A": "1", "B": "two words"}


def test_dropin_without_reset_adds_second_execstart():
    dropin = unitfile.parse("[Service]\nExecStart=/usr/bin/other\n", "/m.service.d/x.conf")
    unit = unitfile.effective("m.service", [unitfile.parse(FRAGMENT, "/m.service"), dropin])
    assert len(unit.exec_start) == 2
    assert unit.exec_start_errors[0].path == "/m.service.d/x.conf"


def test_dropin_with_reset_replaces_execstart():
    dropin = unitfile.parse("[Service]\nExecStart=\nExecStart=-/usr/bin/other --x\n", "/m.service.d/x.conf")
    unit = unitfile.effective("m.service", [unitfile.parse(FRAGMENT, "/m.service"), dropin])
    assert [command.argv for command in unit.exec_start] == [["/usr/bin/other", "--x"]]
    assert unit.exec_start[0].prefix == "-"
    assert unit.exec_start_errors == []


def test_oneshot_allows_several_execstart():
    text = "[Service]\nType=oneshot\nExecStart=/a\nExecStart=/b\n"
    unit = unitfile.effective("o.service", [unitfile.parse(text)])
    assert unit.exec_start_errors == []


def test_later_scalar_setting_wins():
    dropin = unitfile.parse("[Service]\nKillMode=process\n", "/d.conf")
    unit = unitfile.effective("m.service", [unitfile.parse(FRAGMENT, "/m.service"), dropin])
    assert unit.entry("KillMode").path == "/d.conf"
    assert unit.get("KillMode") == "process"


def test_environment_file_optional_prefix():
    unit = unitfile.effective("x.service", [unitfile.parse("[Service]\nEnvironmentFile=-/etc/x.env /etc/y.env\n")])
    assert [(path, optional) for path, optional, _ in unit.environment_files] == [("/etc/x.env", True), ("/etc/y.env", False)]


def test_template_names():
    assert unitfile.template_name("keeper@9.timer") == "keeper@.timer"
    assert unitfile.dropin_dir_names("keeper@9.service") == ["keeper@.service.d", "keeper@9.service.d"]
    assert unitfile.specifier_instance("/etc/k-%i.env", "9") == "/etc/k-9.env"
