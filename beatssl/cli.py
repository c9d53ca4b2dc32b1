"""``beatssl-edge``: the command line of the distribution. It wires the packages together and holds no logic of
its own: ``run`` starts an :class:`edge.app.EdgeApp` (with the live page of :mod:`viewers.web` and the metrics
endpoint when asked), ``detect`` runs :mod:`offline.detect`, ``demo`` runs :mod:`beatssl.demo`, ``view`` the terminal
view of :mod:`viewers.terminal`, ``config show`` the effective configuration of ``run``."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edge import config as cfg
from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.ecg import canonical_lead
from edge.inference import EngineError, ManifestError
from edge.metrics import MetricsServer
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import BrokerAddress, MqttSettings
from edge.transport.options import (
    ClientIdOpt,
    KeepaliveOpt,
    MqttVersionOpt,
    PasswordFileOpt,
    TlsCaOpt,
    TlsCertOpt,
    TlsInsecureOpt,
    TlsKeyOpt,
    UsernameOpt,
    settings_from_options,
)
from viewers.web import CREDENTIALS_ENV, InsecureBindError, WebServer, read_credentials

app = typer.Typer(
    help="beatssl-edge: real-time ECG monitoring over MQTT — online beat detection, wave segmentation, rhythm labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


# ---------------------------------------------------------------------------------------------- options
BrokerOpt = Annotated[str | None, typer.Option(
    "--broker", envvar="BEATSSL_BROKER",
    help="MQTT broker HOST:PORT. Without it an embedded broker is started on 127.0.0.1 "
         "(mosquitto if installed, else an in-process MQTT 3.1.1 broker).")]
LogLevelOpt = Annotated[str, typer.Option("--log-level", help="Logging level: debug, info, warning, error.")]
EngineOpt = Annotated[list[Path] | None, typer.Option(
    "--engine", help="Engine folder to load (repeat for a segmentation and a classification engine). "
                     "Default: the shipped engines in engines/ (BEATSSL_ENGINES overrides the folder).")]
NoEnginesOpt = Annotated[bool, typer.Option("--no-engines", help="Load no engine: beats and beat-based rhythm only.")]
BackendOpt = Annotated[str, typer.Option(help="Inference backend: auto (TensorRT when a plan and a GPU are "
                                              "present), onnxruntime or tensorrt.")]
ThreadsOpt = Annotated[int, typer.Option(min=1, help="ONNX Runtime intra-op threads per engine (1 is best on "
                                                       "small CPUs: no spinning pool; see bench/README.md).")]
MaxBatchOpt = Annotated[int, typer.Option(min=1, help="Most windows per engine call, across all devices.")]
MaxWaitOpt = Annotated[float, typer.Option(help="Longest a window waits for others to fill a batch, ms.")]
SegLeadsOpt = Annotated[str | None, typer.Option(
    "--segment-leads", help="Leads to segment per beat, comma-separated, or 'all' (default: II, else MLII, "
                            "else the stream's first lead).")]
HopOpt = Annotated[float, typer.Option(help="Period of rhythm messages per device, s.")]
HttpHostOpt = Annotated[str, typer.Option(
    "--http-host", help="Bind address of the live page. Anything but 127.0.0.1 / localhost needs "
                        "--http-credentials (see docs/web.md).")]
HttpCredentialsOpt = Annotated[Path | None, typer.Option(
    "--http-credentials", allow_from_autoenv=False,  # its variable holds user:password itself, not a path
    help=f"File whose first line is user:password: HTTP Basic authentication for the live page (or set "
         f"{CREDENTIALS_ENV}).")]
ConfigOpt = Annotated[Path | None, cfg.config_option()]


def mqtt_settings(
    broker: BrokerAddress,
    mqtt_version: str = "5",
    username: str | None = None,
    password_file: Path | None = None,
    client_id: str = "",
    keepalive: int = 30,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    tls_insecure: bool = False,
) -> MqttSettings:
    """Build validated MqttSettings from CLI values (raises typer.Exit with a clear message on bad input)."""
    try:
        settings = settings_from_options(broker, mqtt_version, username, password_file, client_id, keepalive,
                                         tls_ca, tls_cert, tls_key, tls_insecure)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if tls_insecure:
        err.print("[bold yellow]WARNING: --tls-insecure: the broker's certificate is NOT verified; "
                  "anyone on the path can read and forge ECG data.[/]")
    return settings


def parse_broker(text: str) -> BrokerAddress:
    try:
        return BrokerAddress.parse(text)
    except ValueError as exc:
        raise fail(str(exc)) from None


def parse_partition(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise fail(f"--partition must look like k/N (e.g. 0/2), not {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise fail(f"--partition {text}: need 0 <= k < N")
    return k, n


def default_engines() -> list[Path]:
    """The shipped engine folders: every folder with a manifest.json under $BEATSSL_ENGINES or ./engines."""
    root = Path(os.environ.get("BEATSSL_ENGINES", Path(__file__).resolve().parent.parent / "engines"))
    return sorted(p.parent for p in root.glob("*/manifest.json"))


def engine_options(engine: list[Path] | None, no_engines: bool, segment_leads: str | None) -> dict:
    """EdgeConfig keyword arguments for the engine options (validated)."""
    if no_engines:
        return {"engines": ()}
    folders = tuple(engine) if engine else tuple(default_engines())
    for folder in folders:
        if not (Path(folder) / "manifest.json").is_file():
            raise fail(f"--engine {folder}: no manifest.json there")
    leads = tuple(canonical_lead(x) if x != "all" else x for x in segment_leads.split(",")) if segment_leads else ()
    return {"engines": folders, "seg_leads": leads}


def build_edge(config: EdgeConfig) -> EdgeApp:
    """EdgeApp from a config, turning engine-loading problems into a clear CLI error."""
    try:
        return EdgeApp(config)
    except (ManifestError, EngineError, ValueError) as exc:
        raise fail(f"cannot load the engines: {exc}") from None


def web_server(settings: MqttSettings, host: str, port: int, credentials_file: Path | None) -> WebServer:
    """The live page's server, bound but not started; a clear CLI error when it must not or cannot run."""
    try:
        return WebServer(settings, host, port, read_credentials(credentials_file))
    except InsecureBindError as exc:
        raise fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise fail(f"live page on {host}:{port}: {exc}") from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def wait_for_signal(stop: threading.Event, duration_s: float | None) -> None:
    """Block until SIGINT/SIGTERM, ``stop`` is set, or ``duration_s`` has passed."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait(duration_s)


# ---------------------------------------------------------------------------------------------- run
@app.command(context_settings=cfg.ENV_CONTEXT)
def run(
    config: ConfigOpt = None,
    broker: BrokerOpt = None,
    node: Annotated[str | None, typer.Option(
        help="Node name in beatssl/edge/<node>/health (default: hostname).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker threads; devices are spread over them.")] = 2,
    partition: Annotated[str | None, typer.Option(
        help="Handle only share k of N (stable hash of the device id), e.g. 0/2, for several workers.")] = None,
    shared_group: Annotated[str | None, typer.Option(
        help="Subscribe via the MQTT 5 shared subscription $share/GROUP/ecg/+/samples (EMQX with a sticky or "
             "hash_topic strategy; NOT mosquitto, which round-robins a device's chunks over workers).")] = None,
    stale_after_s: Annotated[float, typer.Option(help="Seconds without data before a device is flushed and "
                                                      "reported stale.")] = 5.0,
    max_payload_kb: Annotated[int, typer.Option(help="Largest accepted samples payload, KiB.")] = 256,
    max_leads: Annotated[int, typer.Option(help="Most leads accepted per stream.")] = 16,
    min_fs_hz: Annotated[float, typer.Option(help="Lowest accepted sampling rate, Hz.")] = proto.Limits.min_fs_hz,
    max_fs_hz: Annotated[float, typer.Option(help="Highest accepted sampling rate, Hz.")] = proto.Limits.max_fs_hz,
    duration_s: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: run until "
                                                             "Ctrl-C / SIGTERM).")] = None,
    engine: EngineOpt = None,
    no_engines: NoEnginesOpt = False,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = 1,
    max_batch: MaxBatchOpt = 64,
    max_wait_ms: MaxWaitOpt = 20.0,
    segment_leads: SegLeadsOpt = None,
    rhythm_hop_s: HopOpt = 2.0,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on "
                                                          "http://127.0.0.1:PORT/metrics.")] = None,
    http_port: Annotated[int | None, typer.Option(
        "--http-port", help="Serve the live page (browser) on this port (0: a free one); default: no page.")] = None,
    http_host: HttpHostOpt = "127.0.0.1",
    http_credentials: HttpCredentialsOpt = None,
    mqtt_version: MqttVersionOpt = "5",
    username: UsernameOpt = None,
    password_file: PasswordFileOpt = None,
    client_id: ClientIdOpt = "",
    keepalive: KeepaliveOpt = 30,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    tls_insecure: TlsInsecureOpt = False,
    log_level: LogLevelOpt = "info",
) -> None:
    """Subscribe to ecg/+/samples, detect beats online, segment them and classify rhythm windows with the loaded
    engines, and publish beatssl/<device>/{beats,rhythm,status,errors} (see docs/protocol.md).

    Options also come from BEATSSL_<OPTION> environment variables (BEATSSL_WORKERS=4) and a TOML --config file.
    Precedence: command line > environment > config file > defaults; `beatssl-edge config show` prints the result.
    The broker password comes from --password-file or BEATSSL_MQTT_PASSWORD, never from the command line.
    SIGTERM stops gracefully: queued chunks are processed, detectors flushed, outputs acknowledged, then exit.
    """
    setup_logging(log_level)
    embedded = None
    if broker is None:
        embedded = EmbeddedBroker().start()
        address = embedded.address
        if not embedded.mqtt5:
            mqtt_version = "3.1.1"
        err.print(f"started an embedded {embedded.kind} broker on {address}")
    else:
        address = parse_broker(broker)
    settings = mqtt_settings(address, mqtt_version, username, password_file, client_id, keepalive,
                             tls_ca, tls_cert, tls_key, tls_insecure)
    if not 0 < min_fs_hz <= max_fs_hz:
        raise fail(f"need 0 < --min-fs-hz <= --max-fs-hz, not {min_fs_hz:g} and {max_fs_hz:g}")
    limits = proto.Limits(max_payload_bytes=max_payload_kb * 1024, max_leads=max_leads, min_fs_hz=min_fs_hz,
                          max_fs_hz=max_fs_hz)
    if shared_group is not None and (not proto.valid_device_id(shared_group) or mqtt_version != "5"):
        raise fail("--shared-group needs MQTT 5 and a name of letters, digits and _.:@-")
    config = EdgeConfig(mqtt=settings, workers=workers, partition=parse_partition(partition),
                        shared_group=shared_group,
                        stale_after_s=stale_after_s, limits=limits, backend=backend, threads=threads,
                        max_batch=max_batch, max_wait_ms=max_wait_ms, rhythm_hop_s=rhythm_hop_s,
                        **engine_options(engine, no_engines, segment_leads), **({"node": node} if node else {}))
    try:
        web = web_server(settings, http_host, http_port, http_credentials) if http_port is not None else None
    except typer.Exit:
        if embedded is not None:
            embedded.stop()
        raise
    edge = build_edge(config).start()
    for task, e in edge.engines.items():
        err.print(f"{task} engine {e.manifest.name} on {e.backend.name}")
    metrics = MetricsServer(lambda: edge.health("online"), metrics_port).start() if metrics_port else None
    if web is not None:
        err.print(f"live page on {web.start().url}")
    if not edge.wait_connected(10):
        err.print(f"[yellow]not connected to {address} yet; retrying in the background[/]")
    stop = threading.Event()
    try:
        wait_for_signal(stop, duration_s)
    finally:
        edge.stop()
        if metrics is not None:
            metrics.stop()
        if web is not None:
            web.stop()
        if embedded is not None:
            embedded.stop()


# ---------------------------------------------------------------------------------------------- detect
@app.command()
def detect(
    record: Annotated[Path, typer.Argument(help="WFDB record path without extension, e.g. data/mitdb/100.")],
    leads: Annotated[str | None, typer.Option(help="Comma-separated leads to use (default: all).")] = None,
    chunk_ms: Annotated[float, typer.Option(help="Feed the streaming detector in chunks of this many ms "
                                                 "(0 = one chunk); beats are the same either way.")] = 40.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print {record, fs, beats:[{sample, time, ...}]} "
                                                          "to stdout.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the beats as CSV (sample, time_s, rr_s, "
                                                     "hr_bpm, latency_s).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the record with its beats (and the reference beats "
                                                   "of its .atr file, if any) into this PNG.")] = None,
) -> None:
    """Run the edge's streaming beat detector offline on a WFDB record (the same code path as `run`)."""
    from edge.detection.beats import detect_record
    from offline.records import RecordError, read_record

    try:
        rec = read_record(record, leads=leads.split(",") if leads else None)
    except RecordError as exc:
        raise fail(str(exc)) from None
    chunk = int(round(chunk_ms * rec.fs_hz / 1000.0)) or None
    beats = detect_record(rec.signal_mv, rec.fs_hz, chunk_samples=chunk)
    rows = [
        {"sample": b.sample, "time": round(b.time_s, 4), "rr_s": None if b.rr_s is None else round(b.rr_s, 4),
         "hr_bpm": None if b.hr_bpm is None else round(b.hr_bpm, 2), "latency_s": round(b.latency_s, 4)}
        for b in beats
    ]
    if out is not None:
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["sample", "time", "rr_s", "hr_bpm", "latency_s"])
            w.writeheader()
            w.writerows(rows)
    if plot is not None:
        from offline.plots import plot_record_beats
        from offline.records import read_annotations
        from offline.scoring import beat_samples

        try:
            truth = beat_samples(*read_annotations(record))
        except RecordError:
            truth = None
        plot_record_beats(rec.signal_mv, rec.fs_hz, rec.leads, [b.sample for b in beats], plot, truth=truth,
                          title=rec.name)
    if as_json:
        sys.stdout.write(json.dumps({"record": rec.name, "fs": rec.fs_hz, "leads": list(rec.leads),
                                     "beats": rows}) + "\n")
        return
    duration = len(rec.signal_mv) / rec.fs_hz
    hr = 60.0 * len(beats) / duration if duration else 0.0
    Console().print(f"{rec.name}: {len(beats)} beats in {duration:.1f} s ({hr:.0f} bpm mean), "
                    f"fs {rec.fs_hz:g} Hz, leads {', '.join(rec.leads)}" + (f"; written to {out}" if out else "")
                    + (f"; plot in {plot}" if plot else ""))


# ---------------------------------------------------------------------------------------------- demo / view
@app.command()
def demo(
    config: ConfigOpt = None,
    devices: Annotated[int, typer.Option(min=1, max=500, help="Virtual devices replaying the bundled sample.")] = 6,
    speed: Annotated[float, typer.Option(help="Replay speed: 1 = real time.")] = 1.0,
    duration_s: Annotated[float | None, typer.Option(help="Stop after this many seconds (default: Ctrl-C).")] = None,
    refresh_hz: Annotated[float, typer.Option(help="Screen refreshes per second of the live view.")] = 4.0,
    engine: EngineOpt = None,
    no_engines: NoEnginesOpt = False,
    backend: BackendOpt = "auto",
    http_port: Annotated[int, typer.Option("--http-port", help="Port of the live page (0: a free one).")] = 0,
    http_host: HttpHostOpt = "127.0.0.1",
    http_credentials: HttpCredentialsOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Start a broker, the simulator (bundled sample records, looping) and the edge, and show a live view in the
    terminal and in the browser (the URL is printed)."""
    from beatssl.demo import run_demo

    setup_logging(log_level)
    run_demo(devices, speed, duration_s, refresh_hz,
             edge_options={"backend": backend, **engine_options(engine, no_engines, None)},
             make_web=lambda settings: web_server(settings, http_host, http_port, http_credentials),
             make_edge=build_edge, say=lambda line: err.print(line, highlight=False))


@app.command()
def view(
    config: ConfigOpt = None,
    broker: Annotated[str, typer.Option("--broker", envvar="BEATSSL_BROKER",
                                        help="MQTT broker HOST:PORT.")] = "127.0.0.1:1883",
    mqtt_version: MqttVersionOpt = "5",
    username: UsernameOpt = None,
    password_file: PasswordFileOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    tls_insecure: TlsInsecureOpt = False,
    refresh_hz: Annotated[float, typer.Option(help="Screen refreshes per second.")] = 4.0,
) -> None:
    """Live terminal view of what edge nodes publish on a broker (beats, status, errors, health)."""
    from rich.live import Live

    from viewers.terminal import LiveView

    settings = mqtt_settings(parse_broker(broker), mqtt_version, username, password_file, tls_ca=tls_ca,
                             tls_cert=tls_cert, tls_key=tls_key, tls_insecure=tls_insecure)
    lv = LiveView(settings).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with Live(lv.table(), refresh_per_second=refresh_hz) as live:
            while not stop.wait(1.0 / refresh_hz):
                live.update(lv.table())
    finally:
        lv.stop()


# ---------------------------------------------------------------------------------------------- config
config_app = typer.Typer(help="The configuration `run` would use (file, environment, defaults).",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Option(
        "--config", envvar=cfg.CONFIG_ENV, show_default=False,
        help="TOML config file (as for run).")] = None,
    run_args: Annotated[list[str] | None, typer.Argument(
        help="Options of `run` to apply on top, after `--` (e.g. -- --workers 8).", show_default=False)] = None,
) -> None:
    """Print the effective configuration of `beatssl-edge run` as TOML, each value with its origin (command line >
    environment > config file > default), secrets masked. The output works as a --config file."""
    run_cmd = typer.main.get_command(app).commands["run"]
    args = (["--config", str(config)] if config is not None else []) + list(run_args or [])
    with run_cmd.make_context("beatssl-edge run", args) as ctx:
        sys.stdout.write(cfg.effective_toml(ctx))


if __name__ == "__main__":  # pragma: no cover - `python -m beatssl.cli`
    app()
