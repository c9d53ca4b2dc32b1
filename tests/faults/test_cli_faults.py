"""Issue 14, silent failures a user hits in the first hour: every bad option value is a usage error (one line on
stderr, exit 2) with its range in --help; a node that never reaches its broker, a metrics port in use, no engines or
a missing extra are one line and a non-zero exit; broker URLs parse; the embedded broker takes 1883 when free; the
live page does not steal the edge's client id; `train` turns bad paths into one line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from edge_harness import Collector, Feeder
from typer.testing import CliRunner

from beatssl.cli import app
from edge import protocol as proto
from edge.transport.broker import free_port, port_is_free
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.records import read_record

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BEATSSL_"):
            monkeypatch.delenv(name)


def edge_cli(args: list[str]):  # noqa: ANN201 - a Click Result
    """``beatssl-edge ARGS`` in this process."""
    return CliRunner().invoke(app, args, prog_name="beatssl-edge")


def one_error_line(result, code: int = 2) -> str:  # noqa: ANN001 - a Click Result
    """The single stderr line of a failed command (asserting exit code, no traceback, one line)."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------- parse time
BAD_VALUES = [
    (["run", "--rhythm-hop-s", "0"], "--rhythm-hop-s"),  # accepted before, and the node hung
    (["run", "--max-wait-ms", "-5"], "--max-wait-ms"),
    (["run", "--segment-leads", "FOO"], "--segment-leads"),
    (["run", "--segment-leads", "II,all"], "--segment-leads"),
    (["run", "--log-level", "verbose"], "--log-level"),
    (["run", "--backend", "cuda"], "--backend"),
    (["run", "--http-port", "99999"], "--http-port"),
    (["run", "--metrics-port", "0"], "--metrics-port"),
    (["run", "--workers", "0"], "--workers"),
    (["run", "--workers", "65"], "--workers"),
    (["run", "--max-batch", "0"], "--max-batch"),
    (["run", "--threads", "0"], "--threads"),
    (["run", "--stale-after-s", "0"], "--stale-after-s"),
    (["run", "--duration-s", "-1"], "--duration-s"),
    (["run", "--connect-timeout-s", "0"], "--connect-timeout-s"),
    (["run", "--connect-timeout-s", "601"], "--connect-timeout-s"),
    (["run", "--partition", "2/2"], "--partition"),
    (["run", "--node", "a/b"], "--node"),
    (["run", "--broker", "mqtt://host:99999"], "--broker"),
    (["run", "--mqtt-version", "4"], "--mqtt-version"),
    (["detect", "x", "--chunk-ms", "-1"], "--chunk-ms"),
    (["demo", "--speed", "0"], "--speed"),
    (["demo", "--speed", "-1"], "--speed"),
    (["demo", "--refresh-hz", "0"], "--refresh-hz"),
    (["demo", "--http-port", "-1"], "--http-port"),
    (["view", "--refresh-hz", "0"], "--refresh-hz"),
    (["view", "--broker", "host:port"], "--broker"),
]


@pytest.mark.parametrize(("args", "option"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES])
def test_a_bad_value_is_a_one_line_usage_error(args: list[str], option: str) -> None:
    result = edge_cli(args)
    line = one_error_line(result)
    assert option in line and f"beatssl-edge {args[0]}" in line


RANGED = {"run": ["--rhythm-hop-s", "--diagnosis-every-s", "--max-wait-ms", "--stale-after-s", "--min-fs-hz",
                  "--max-fs-hz", "--connect-timeout-s", "--duration-s", "--workers", "--max-batch", "--threads",
                  "--http-port", "--metrics-port", "--max-payload-kb", "--max-leads", "--keepalive"],
          "demo": ["--speed", "--refresh-hz", "--devices", "--http-port", "--duration-s"],
          "view": ["--refresh-hz", "--keepalive"], "detect": ["--chunk-ms"]}


@pytest.mark.parametrize("command", sorted(RANGED))
def test_every_numeric_option_states_its_range_in_help(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "400"})
    rows = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("│ --")}
    for option in RANGED[command]:
        assert re.search(r"\[-?[\d.e+]+<=?x(<=[\d.e+]+)?\]", rows[option]), (command, option, rows[option])


# ---------------------------------------------------------------------------------------------- run time
def test_a_node_that_never_reaches_its_broker_exits_1(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    result = edge_cli(["run", "--broker", f"127.0.0.1:{dead}", "--no-engines", "--duration-s", "30",
                                      "--connect-timeout-s", "1"])
    line = one_error_line(result, code=1)
    assert f"127.0.0.1:{dead}" in line and "within 1 s" in line


def test_metrics_port_in_use_is_one_line(broker) -> None:  # noqa: ANN001 - fixture
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = edge_cli(["run", "--broker", str(broker.address), "--no-engines", "--duration-s", "2",
                                          "--metrics-port", str(port)])
    line = one_error_line(result)
    assert f"--metrics-port {port}" in line


def test_no_engines_found_is_one_line_naming_the_folder(broker, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("BEATSSL_ENGINES", str(tmp_path))
    result = edge_cli(["run", "--broker", str(broker.address), "--duration-s", "2"])
    line = one_error_line(result)
    assert f"no engines found in {tmp_path}" in line and "--no-engines" in line
    ok = edge_cli(["run", "--broker", str(broker.address), "--duration-s", "1", "--no-engines"])
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize(("text", "address"), [
    ("mqtt://broker.example:1884", BrokerAddress("broker.example", 1884)),
    ("mqtt://broker.example", BrokerAddress("broker.example", 1883)),
    ("mqtts://broker.example", BrokerAddress("broker.example", 8883, tls=True)),
    ("mqtts://10.0.0.2:9883/", BrokerAddress("10.0.0.2", 9883, tls=True)),
    ("mqtt://[::1]:1885", BrokerAddress("::1", 1885)),
    ("broker.example:1884", BrokerAddress("broker.example", 1884)),
])
def test_broker_urls_parse_to_host_and_port(text: str, address: BrokerAddress) -> None:
    assert BrokerAddress.parse(text) == address
    assert MqttSettings(BrokerAddress.parse(text)).tls is address.tls  # mqtts:// turns TLS on


def test_run_connects_to_an_mqtt_url(broker) -> None:  # noqa: ANN001 - fixture
    col = Collector(MqttSettings(broker.address), topics=("beatssl/edge/#",))
    result = edge_cli(["run", "--broker", f"mqtt://127.0.0.1:{broker.port}", "--no-engines",
                                      "--node", "url-node", "--duration-s", "1", "--connect-timeout-s", "5"])
    assert result.exit_code == 0, result.output
    assert col.wait_for(lambda: any(m["state"] == "offline" for m in col.get(proto.health_topic("url-node"))), 5)
    col.close()


def _embedded_port(stderr: str) -> int:
    line = next(x for x in stderr.splitlines() if "embedded" in x)
    return BrokerAddress.parse(line.split(" on ")[1].split()[0]).port


def test_embedded_broker_takes_another_port_when_1883_is_taken() -> None:
    with socket.socket() as busy:
        try:
            busy.bind(("127.0.0.1", 1883))
            busy.listen()
        except OSError:
            pass  # someone else holds 1883: the same situation
        result = edge_cli(["run", "--no-engines", "--duration-s", "1"])
    assert result.exit_code == 0, result.output
    assert _embedded_port(result.stderr) != 1883 and "(1883 is taken)" in result.stderr


def test_embedded_broker_listens_on_1883_for_a_default_simulator(data_dir: Path) -> None:
    if not port_is_free(1883):
        pytest.skip("127.0.0.1:1883 is in use on this machine")
    edge = subprocess.Popen([sys.executable, "-m", "beatssl.cli", "run", "--no-engines", "--duration-s", "15",
                             "--node", "default-port"], stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        first = edge.stderr.readline()
        assert "on 127.0.0.1:1883" in first, first
        col = Collector(MqttSettings(BrokerAddress("127.0.0.1", 1883)), topics=("beatssl/#",))
        assert col.wait_for(lambda: bool(col.get(proto.health_topic("default-port"))), 10)
        from simulator.cli import app as sim_app  # `simulator replay sample` with every default but the length

        replay = CliRunner().invoke(sim_app, ["replay", "sample", "--devices", "1", "--no-loop", "--speed", "max",
                                              "--duration-s", "6", "--quiet"])
        assert replay.exit_code == 0, replay.output
        assert col.wait_for(lambda: len(col.get(proto.beats_topic("sim-000"))) >= 4, 10)
        col.close()
    finally:
        edge.terminate()
        edge.communicate(timeout=20)


def test_the_live_page_does_not_take_the_edges_client_id(broker, data_dir: Path) -> None:  # noqa: ANN001
    """Two clients with one id knock each other off the broker: with --client-id X the page subscribes as X-page and
    the edge, as X, receives every chunk (real mosquitto, real record)."""
    rec = read_record(data_dir / "mitdb" / "100")
    signal = rec.signal_mv[: int(6 * rec.fs_hz)].astype(np.float32)
    settings = MqttSettings(broker.address)
    col = Collector(settings, topics=("beatssl/#",))
    feed = Feeder(settings)
    msgs = feed.chunks(signal, rec.fs_hz, rec.leads)

    def feed_when_online() -> None:
        if col.wait_for(lambda: bool(col.get(proto.health_topic("id-node"))), 10):
            feed.send("dev-1", msgs)

    helper = threading.Thread(target=feed_when_online, daemon=True)
    helper.start()
    result = edge_cli(["run", "--broker", str(broker.address), "--no-engines", "--node", "id-node",
                                      "--client-id", "edge-x", "--http-port", "0", "--stale-after-s", "1",
                                      "--duration-s", "9"])
    helper.join(5)
    assert result.exit_code == 0, result.output
    status = col.get(proto.status_topic("dev-1"))
    assert status and max(s["counters"]["chunks"] for s in status) == len(msgs), (len(msgs), status[-1:])
    col.close()
    feed.close()


# ---------------------------------------------------------------------------------------------- extras
def _without(module: str, code: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing ``module`` fails as if it were not installed."""
    prelude = ("import sys, importlib.abc\n"
               "class Missing(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               f"        if name.split('.')[0] == {module!r}:\n"
               "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
               "sys.meta_path.insert(0, Missing())\n")
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


@pytest.mark.parametrize(("module", "code", "extra", "what"), [
    ("wfdb", "sys.argv = ['beatssl-edge', 'detect', 'x']; from beatssl.cli import app; app()", "sim",
     "beatssl-edge detect"),
    ("matplotlib", "sys.argv = ['beatssl-edge', 'detect', '../shared/data/mitdb/100', '--plot', 'x.png']; "
                   "from beatssl.cli import app; app()", "plots", "beatssl-edge detect"),
    ("wfdb", "sys.argv = ['simulator', 'replay', 'sample']; from beatssl.cli import simulator_main; "
             "simulator_main()", "sim", "simulator"),
    ("torch", "sys.argv = ['train', 'evaluate', 'x.pt']; from beatssl.cli import train_main; train_main()",
     "train", "train"),  # train.cli needs torch at import
])
def test_a_missing_extra_is_one_line_naming_it(module: str, code: str, extra: str, what: str) -> None:
    proc = _without(module, code, REPO)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {what} needs the '{extra}' extra: pip install 'beatssl-edge[{extra}]'")


# ---------------------------------------------------------------------------------------------- train
TRAIN_FAULTS = [
    (["pretrain", "-c", "cpu-small-pretrain", "--data-root", "{tmp}/no-data"], "data folder"),
    (["pretrain", "-c", "no-such-config"], "no config 'no-such-config'"),
    (["finetune", "--task", "segment", "-c", "cpu-small-finetune-segment", "--init", "{tmp}/missing.pt"],
     "--init"),
    (["finetune", "--task", "segment", "-c", "cpu-small-finetune-segment", "--init", "{tmp}/junk.pt"],
     "is not a checkpoint"),
    (["finetune", "--task", "beat-classify", "-c", "cpu-small-finetune-beats", "--beat-r-peaks", "atr",
      "--out", "{tmp}/run"], "data.beat_r_peaks is 'atr'"),
    (["evaluate", "{tmp}/missing.pt"], "no such file"),
    (["evaluate", "{tmp}/junk.pt"], "is not a checkpoint"),
    (["build-engine", "{tmp}/junk.pt", "--out", "{tmp}/engine"], "is not a checkpoint"),
]


@pytest.mark.parametrize(("args", "message"), TRAIN_FAULTS, ids=[" ".join(a[:2]) + f" ({m})" for a, m in TRAIN_FAULTS])
def test_train_turns_bad_paths_into_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    from train.cli import app as train_app

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint\n" * 10)
    result = CliRunner().invoke(train_app, [a.format(tmp=tmp_path) for a in args], prog_name="train")
    assert message in one_error_line(result)
    assert not (tmp_path / "engine").exists()
