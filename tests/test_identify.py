"""Manager daemon, manager command and instance recognition by argv."""

import pytest

from bpm_doctor import identify


@pytest.mark.parametrize("argv", [
    ["/root/.cargo/bin/cargo-tangle", "blueprint", "run", "--protocol", "tangle"],
    ["cargo-tangle", "tangle", "blueprint", "run"],
    ["cargo-tangle", "bp", "r"],
    ["cargo-tangle", "--manifest-path", "x/Cargo.toml", "blueprint", "run"],
])
def test_manager_kind_recognises_daemon(argv):
    assert identify.manager_kind(argv[0], argv) == "daemon"


@pytest.mark.parametrize("argv", [
    ["cargo-tangle", "blueprint", "service", "spawn", "--service-id", "3"],
    ["cargo-tangle", "tangle", "harness", "up"],
    ["cargo-tangle", "blueprint", "pre"],
    ["cargo-tangle", "dev", "up"],
])
def test_manager_kind_recognises_commands(argv):
    assert identify.manager_kind(argv[0], argv) == "command"


def test_manager_kind_ignores_names_and_paths():
    argv = ["/opt/blueprint-manager/svc-1-2/quill", "run"]
    assert identify.manager_kind(argv[0], argv) is None


def test_standalone_binary_is_daemon():
    assert identify.manager_kind("/usr/local/bin/blueprint-manager", ["blueprint-manager", "-c", "x.toml"]) == "daemon"


def test_cargo_process_counts_only_through_cargo():
    argv = ["cargo", "tangle", "blueprint", "run"]
    assert identify.manager_kind("/root/.cargo/bin/cargo", argv) is None
    assert identify.manager_kind("/root/.cargo/bin/cargo", argv, through_cargo=True) == "daemon"


def test_manager_options_lists_instance_flags_as_unknown():
    argv = ["cargo-tangle", "blueprint", "run", "-t", "--pretty", "--keystore-uri", "/k",
            "--data-dir", "/d", "--chain", "testnet", "--settings-file=/s.env"]
    options, unknown = identify.manager_options(argv[0], argv)
    assert unknown == ["-t", "--pretty", "--keystore-uri", "/k", "--chain", "testnet"]
    assert options["--data-dir"] == "/d"
    assert options["--settings-file"] == "/s.env"


def test_manager_options_accepts_every_run_flag():
    argv = ["cargo-tangle", "blueprint", "run", "-p", "tangle", "--http-rpc-url", "http://h", "--ws-rpc-url", "ws://h",
            "-k", "/k", "-w", "testnet", "-d", "/d", "-n", "x", "-f", "/s", "--allow-unchecked-attestations",
            "--spawn-method", "native", "--preferred-source", "native", "--vm", "--no-vm", "--save-runtime-prefs"]
    _options, unknown = identify.manager_options(argv[0], argv)
    assert unknown == []


def test_standalone_options_accept_test_mode_and_dirs():
    argv = ["blueprint-manager", "-c", "/c.toml", "-d", "/d", "-k", "/k", "-r", "/run/bpm", "-z", "/cache", "--test-mode", "-vvv"]
    options, unknown = identify.manager_options("blueprint-manager", argv)
    assert unknown == []
    assert options["--cache-dir"] == "/cache"
    assert options["--test-mode"] == ""


def test_manager_paths_defaults_follow_cwd_and_home():
    argv = ["cargo-tangle", "blueprint", "run"]
    paths = identify.manager_paths("cargo-tangle", argv, "/srv/op", {"HOME": "/root"})
    assert paths.settings_file == "/srv/op/settings.env"
    assert paths.data_dir == "/srv/op/data"
    assert paths.keystore == "/srv/op/keystore"
    assert paths.cache_root == "/root/.cache/blueprint-manager"
    assert paths.runtime_root == "/srv/op/blueprint-manager/run"


def test_manager_paths_prefer_xdg_runtime_dir():
    paths = identify.manager_paths("cargo-tangle", ["cargo-tangle", "blueprint", "run"], "/srv",
                                   {"XDG_RUNTIME_DIR": "/run/user/0", "XDG_CACHE_HOME": "/c"})
    assert paths.runtime_root == "/run/user/0/blueprint-manager"
    assert paths.cache_root == "/c/blueprint-manager"


@pytest.mark.parametrize("argv, expected", [
    (["x", "run"], True),
    (["x", "run", "--pretty", "-vv"], True),
    (["x", "--verbose", "run"], True),
    (["cargo", "run", "--bin", "x", "--", "run"], True),
    (["x"], False),
    (["x", "serve", "run"], False),
])
def test_has_run_subcommand(argv, expected):
    assert identify.has_run_subcommand(argv) is expected


@pytest.mark.parametrize("value, expected", [
    ("true", True), ("1", True), ("yes", True), ("TRUE", True), ("anything", True),
    ("false", False), ("0", False), ("no", False), ("off", False), ("", False), ("F", False), (None, False),
])
def test_is_truthy_follows_clap(value, expected):
    assert identify.is_truthy(value) is expected


def test_bridge_socket_service_needs_matching_labels():
    assert identify.bridge_socket_service("/srv/q/blueprint-manager/run/svc-42-7/svc-42-7.sock") == (42, 7)
    assert identify.bridge_socket_service("/srv/q/run/svc-42-7/svc-42-8.sock") is None


def test_in_manager_cache_accepts_configured_roots():
    assert identify.in_manager_cache("/root/.cache/blueprint-manager/svc-1-2/bin")
    assert not identify.in_manager_cache("/var/cache/bpm/svc-1-2/bin")
    assert identify.in_manager_cache("/var/cache/bpm/svc-1-2/bin", {"/var/cache/bpm"})


@pytest.mark.parametrize("executable, argv, environment, expected", [
    ("/usr/bin/sleep", ["sleep", "30"], {}, False),
    ("/usr/bin/sleep", ["sleep", "30"], {"HOME": "/root", "TEST_MODE": "true"}, False),
    ("/usr/bin/sleep", ["sleep", "30"], {"BLUEPRINT_ID": "1"}, True),
    ("/usr/bin/sleep", ["sleep", "30"], {"BRIDGE_SOCKET_PATH": "/run/x.sock"}, True),
    ("/opt/q/quill", ["quill", "run", "--service-id", "3"], {}, True),
    ("/usr/local/bin/cargo-tangle", ["cargo-tangle", "blueprint", "run"], {}, True),
    ("/usr/local/bin/cargo-tangle", ["cargo-tangle", "blueprint", "service", "spawn"], {}, True),
    ("/usr/local/bin/cargo-tangle", ["cargo-tangle", "blueprint", "deploy"], {}, False),
    ("/root/.cache/blueprint-manager/svc-1-2/quill", ["quill"], {}, True),
    ("/opt/q/quill (deleted)", ["quill"], {}, False),
])
def test_may_be_blueprint_process(executable, argv, environment, expected):
    assert identify.may_be_blueprint_process(executable, argv, environment) is expected


def test_may_be_blueprint_process_knows_configured_names():
    assert identify.may_be_blueprint_process("/opt/q/quill (deleted)", ["quill"], {}, {"quill"})
