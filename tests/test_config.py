"""Options from a TOML file and BEATSSL_<OPTION> variables: precedence (command line > environment > file >
default), `config show` (valid TOML, origins, secrets masked), clear errors for bad files, per-command tables, and
a real `run` driven by a config file (node name, sampling-rate limits)."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from edge_harness import Collector, Feeder
from typer.testing import CliRunner

from beatssl.cli import app
from edge import config as cfg
from edge import protocol as proto
from edge.transport.mqtt import MqttSettings

runner = CliRunner()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BEATSSL_"):
            monkeypatch.delenv(name)


def show(*args: str) -> tuple[dict, dict[str, str], str]:
    """Run `config show`; return the parsed TOML, each key's origin comment, and the raw text."""
    result = runner.invoke(app, ["config", "show", *args])
    assert result.exit_code == 0, result.output
    origins = {m[1]: m[2].strip() for m in re.finditer(r"^#? ?(\w+)\s+=.*#\s*([^#\n]+)$", result.stdout, re.M)}
    return cfg.tomllib.loads(result.stdout), origins, result.stdout  # cfg.tomllib: tomli on Python 3.10


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_command_line_over_env_over_file_over_default(tmp_path: Path, monkeypatch) -> None:
    conf = write(tmp_path / "edge.toml", 'workers = 3\nmax-payload-kb = 64\ntls_ca = "/etc/ca.pem"\n'
                                         'keepalive = 40\nengine = ["a", "b"]\n')
    values, origins, _ = show()
    assert values["workers"] == 2 and origins["workers"] == "default"
    values, origins, _ = show("--config", str(conf))
    assert (values["workers"], values["max_payload_kb"], values["tls_ca"]) == (3, 64, "/etc/ca.pem")
    assert values["engine"] == ["a", "b"] and origins["workers"] == "config file"
    monkeypatch.setenv("BEATSSL_WORKERS", "5")
    monkeypatch.setenv("BEATSSL_TLS_INSECURE", "1")
    monkeypatch.setenv("BEATSSL_MQTT_USERNAME", "edge-7")  # the older name of --username still works
    values, origins, _ = show("--config", str(conf))
    assert values["workers"] == 5 and origins["workers"] == "env BEATSSL_WORKERS"
    assert values["tls_insecure"] is True and values["username"] == "edge-7"
    assert values["max_payload_kb"] == 64  # the file still fills what the environment does not set
    values, origins, _ = show("--config", str(conf), "--", "--workers", "7", "--keepalive", "60")
    assert (values["workers"], values["keepalive"]) == (7, 60) and origins["workers"] == "command line"
    monkeypatch.setenv("BEATSSL_CONFIG", str(conf))  # the file itself from the environment
    values, _, _ = show()
    assert values["max_payload_kb"] == 64


def test_show_output_is_a_config_file_and_masks_secrets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BEATSSL_MQTT_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("BEATSSL_HTTP_CREDENTIALS", "admin:letmein")
    conf = write(tmp_path / "edge.toml", 'broker = "mqtt.example:8883"\nnode = "ward-3"\nmin_fs_hz = 100\n'
                                         'password_file = "/etc/beatssl-edge/mqtt-password"\n')
    values, _, text = show("--config", str(conf))
    assert "hunter2" not in text and "letmein" not in text and cfg.MASK in text
    assert values["password_file"] == "/etc/beatssl-edge/mqtt-password"  # a path, not a secret
    again = write(tmp_path / "again.toml", text)
    assert show("--config", str(again))[0] == values  # round trip: same effective options


@pytest.mark.parametrize(("text", "message"), [
    ("wokers = 3\n", "unknown key(s) ['wokers']"),
    ('password = "x"\n', "no passwords in the config file"),
    ("workers = \n", "is not valid TOML"),
    ("[simulator]\nspeed = 2\n", "unknown table(s) ['simulator']"),
    ("[run]\nrefresh_hz = 2\n", "[run]: unknown key(s) ['refresh_hz']"),
    ('workers = "many"\n', "workers"),
])
def test_bad_config_files_fail_with_a_clear_message(tmp_path: Path, text: str, message: str) -> None:
    conf = write(tmp_path / "bad.toml", text)
    result = runner.invoke(app, ["run", "--config", str(conf)])
    assert result.exit_code == 2
    assert message in " ".join(result.output.replace("│", " ").split()), result.output


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "show", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2 and "cannot read config file" in " ".join(result.output.replace("│", " ").split())


def test_other_commands_take_connection_keys_and_their_own_table() -> None:
    data = {"broker": "b:1883", "tls_ca": "/ca.pem", "client_id": "edge-1", "workers": 4,
            "view": {"refresh_hz": 2.0, "broker": "v:1883"}, "replay": {"devices": 10}}
    view = cfg.defaults_for(data, "view", ["broker", "tls_ca", "client_id", "refresh_hz"])
    assert view == {"broker": "v:1883", "tls_ca": "/ca.pem", "refresh_hz": 2.0}  # no client_id: it is per command
    run = cfg.defaults_for(data, "run", ["broker", "tls_ca", "client_id", "workers"])
    assert run == {"broker": "b:1883", "tls_ca": "/ca.pem", "client_id": "edge-1", "workers": 4}
    with pytest.raises(cfg.ConfigError, match=r"\[view\]: unknown key"):
        cfg.defaults_for({"view": {"workers": 2}}, "view", ["broker"])


def test_run_is_driven_by_the_config_file_and_env(broker, tmp_path: Path, monkeypatch) -> None:
    conf = write(tmp_path / "edge.toml", f'broker = "{broker.address}"\nnode = "from-file"\nno_engines = true\n'
                                         f'duration_s = 3.0\nmax_fs_hz = 300\n')
    monkeypatch.setenv("BEATSSL_NODE", "from-env")
    settings = MqttSettings(broker.address)
    col = Collector(settings, topics=("beatssl/#",))
    feed = Feeder(settings)

    def feed_when_online() -> None:  # run() blocks the main thread (it owns the signal handlers)
        if col.wait_for(lambda: bool(col.get(proto.health_topic("from-env"))), 10):
            # max_fs_hz = 300 from the file: a 360 Hz stream breaks the limit and is reported
            chunk = proto.SamplesMessage(0, 360.0, ("MLII",), 0.0, np.zeros((14, 1), dtype=np.float32))
            feed.raw("fast", proto.encode_samples_json(chunk))

    helper = threading.Thread(target=feed_when_online, daemon=True)
    helper.start()
    result = runner.invoke(app, ["run", "--config", str(conf)])  # duration_s from the file ends it
    helper.join(5)
    assert result.exit_code == 0, result.output
    health = col.get(proto.health_topic("from-env"))
    assert health and health[-1]["state"] == "offline", "env BEATSSL_NODE wins over the file's node"
    assert not col.get(proto.health_topic("from-file"))
    assert [m["code"] for m in col.get(proto.errors_topic("fast"))] == ["bad_fs"]
    col.close()
    feed.close()
