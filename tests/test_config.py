"""Configuration layers: defaults < remembered < file < environment < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from stack import config
from stack.errors import ConfigError


def test_hcl_file_env_and_flags_layer_in_order(tmp_path: Path) -> None:
    f = tmp_path / "node.hcl"
    f.write_text(
        'bind = "127.0.0.9"\nhttp_port = 9000\nretry_join = ["127.0.0.8:7481"]\n'
        'bootstrap_expect = 3\nlog_json = true\ntoken = "shared-secret"\n'
    )
    env = {"STACK_HTTP_PORT": "9001", "STACK_DATACENTER": "east"}
    cfg = config.build({"datacenter": "west", "data_dir": tmp_path}, f, env)
    assert cfg.bind == "127.0.0.9"  # file
    assert cfg.http_port == 9001  # env beats file
    assert cfg.datacenter == "west"  # flag beats env
    assert cfg.retry_join == ("127.0.0.8:7481",)
    assert cfg.log_json is True and cfg.bootstrap_expect == 3


def test_json_file(tmp_path: Path) -> None:
    f = tmp_path / "node.json"
    f.write_text('{"rpc_port": 7000, "server": false}')
    cfg = config.build({"data_dir": tmp_path}, f, {})
    assert cfg.rpc_port == 7000 and cfg.server is False


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ('{"nope": 1}', ".json", "unknown setting 'nope'"),
        ('{"http_port": "x"}', ".json", "bad value"),
        ("{not json", ".json", "invalid JSON"),
        ("bind = ", ".hcl", "invalid HCL"),
        ('{"http_port": 70000}', ".json", "http_port must be 0-65535"),
        ('{"log_level": "loud"}', ".json", "log_level"),
        ('{"join": ["host:notaport"]}', ".json", "bad address"),
    ],
)
def test_bad_config_is_a_clear_error(tmp_path: Path, text: str, suffix: str, message: str) -> None:
    f = tmp_path / f"c{suffix}"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        config.build({"data_dir": tmp_path}, f, {})


def test_bad_environment_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="server"):
        config.build({"data_dir": tmp_path}, None, {"STACK_SERVER": "maybe"})


def test_bootstrap_expect_needs_peers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="retry_join"):
        config.build({"data_dir": tmp_path, "bootstrap_expect": 3}, None, {})


def test_bootstrap_expect_needs_a_shared_token(tmp_path: Path) -> None:
    flags = {"data_dir": tmp_path, "bootstrap_expect": 3, "retry_join": ["127.0.0.8:7481"]}
    with pytest.raises(ConfigError, match="token"):
        config.build(flags, None, {})
    assert config.build({**flags, "token": "s"}, None, {}).token == "s"


def test_a_restart_needs_only_the_data_dir(tmp_path: Path) -> None:
    first = config.build(
        {"data_dir": tmp_path, "bind": "127.0.0.7", "http_port": 1234, "name": "n7"}, None, {}
    )
    config.remember(first)
    again = config.build({"data_dir": tmp_path}, None, {})
    assert (again.bind, again.http_port, again.node_name) == ("127.0.0.7", 1234, "n7")
    # An explicit flag still wins over what was remembered.
    moved = config.build({"data_dir": tmp_path, "http_port": 4321}, None, {})
    assert moved.http_port == 4321 and moved.bind == "127.0.0.7"


def test_corrupt_remembered_settings_refuse_to_start(tmp_path: Path) -> None:
    (tmp_path / config.SETTINGS_FILE).write_text("{garbage")
    with pytest.raises(ConfigError, match="unreadable"):
        config.build({"data_dir": tmp_path}, None, {})
