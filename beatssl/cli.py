"""``beatssl-edge``: the command line of the distribution. It wires the packages together and holds no logic of
its own: ``run`` starts an :class:`edge.app.EdgeApp` (with the live page of :mod:`viewers.web` and the metrics
endpoint when asked), ``detect`` runs the streaming detector offline on a record, ``demo`` runs
:mod:`beatssl.demo`, ``view`` the terminal view of :mod:`viewers.terminal`, ``config show`` the effective
configuration of ``run``.

The console scripts of the package start here (``app``, :func:`simulator_main`, :func:`train_main`): a bad option
value, a failed check or a missing optional dependency prints one ``error:`` line on stderr and exits with a
non-zero code (2 for usage errors and missing extras), never a traceback (:class:`edge.config.Commands`).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edge import config as cfg
from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig, load_plan
from edge.ecg import LEAD_PREFERENCE, LEADS_12, canonical_lead
from edge.inference import EngineError, ManifestError
from edge.interpret.alarms import AlarmLimits
from edge.metrics import MetricsServer
from edge.supervisor import Supervisor, command_args
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import DEFAULT_PORT, BrokerAddress, MqttSettings
from edge.transport.options import MqttOptions, mqtt_options
from viewers.web import CREDENTIALS_ENV, InsecureBindError, WebServer, read_credentials

app = typer.Typer(
    help="beatssl-edge: real-time ECG monitoring over MQTT — online beat detection, wave segmentation, rhythm labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=cfg.Commands,
)
err = Console(stderr=True, soft_wrap=True)  # soft wrap: an error stays one line, whatever the terminal width

ENGINES_ENV = "BEATSSL_ENGINES"
LOG_LEVELS = ("debug", "info", "warning", "error")
BACKENDS = ("auto", "onnxruntime", "tensorrt")
#: lead names --segment-leads accepts (besides 'all'; aliases such as ML2 or D2 are canonicalised first): the 12
#: standard leads and the Holter leads of the single-lead preference order (MLII)
SEGMENT_LEADS = frozenset(LEADS_12) | frozenset(LEAD_PREFERENCE)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line error and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {' '.join(message.split())}", highlight=False)
    return typer.Exit(code)


# ---------------------------------------------------------------------------------------------- entry points
def simulator_main() -> None:
    """Console script ``simulator`` (the 'sim' extra: its replay reads WFDB records)."""
    try:
        from simulator.cli import app as simulator_app
    except ModuleNotFoundError as exc:
        cfg.exit_missing_extra(exc, "simulator")
    simulator_app()


def train_main() -> None:
    """Console script ``train`` (the 'train' extra)."""
    try:
        from train.cli import app as train_app
    except ModuleNotFoundError as exc:
        cfg.exit_missing_extra(exc, "train")
    train_app()


# ---------------------------------------------------------------------------------------------- checks
def number_option(*names: str, help: str, gt: float | None = None, ge: float = 0.0, le: float | None = None,
                  **kwargs: Any) -> Any:
    """A ``typer.Option`` for a finite number, checked at parse time against a range that its help states
    (``gt``: lower bound, excluded, else ``ge``: included; ``le``: upper bound, included). None passes."""
    low = f"{gt:g}<" if gt is not None else f"{ge:g}<="
    text = f"{low}x" + (f"<={le:g}" if le is not None else "")  # "[x>0]" would be read as rich markup

    def check(value: float | None) -> float | None:
        if value is None:
            return value
        if not (math.isfinite(value) and (value > gt if gt is not None else value >= ge)
                and (le is None or value <= le)):
            raise typer.BadParameter(f"{value:g} is not in the range {text}")
        return value

    return typer.Option(*names, help=f"{help} [{text}]", callback=check, **kwargs)


def choice_option(*names: str, help: str, choices: Sequence[str], **kwargs: Any) -> Any:
    """A ``typer.Option`` taking one of ``choices`` (any case; passed on in lower case)."""

    def check(value: str) -> str:
        if value.lower() not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value.lower()

    return typer.Option(*names, help=f"{help} One of: {', '.join(choices)}.", callback=check, **kwargs)


def _parse_check(parse: Callable[[str], object]) -> Callable[[str | None], str | None]:
    """A typer callback that checks an option's text with ``parse`` at parse time (ValueError → usage error)."""

    def check(value: str | None) -> str | None:
        if value is not None:
            try:
                parse(value)
            except ValueError as exc:
                raise typer.BadParameter(str(exc)) from None
        return value

    return check


def _check_name(value: str | None) -> str | None:
    """A node or group name goes into topics: the device-id alphabet."""
    if value is not None and not proto.valid_device_id(value):
        raise typer.BadParameter(f"{value!r}: 1-64 characters of letters, digits and _.:@-")
    return value


def parse_partition(text: str | None) -> tuple[int, int] | None:
    """``"k/N"`` → ``(k, N)`` with ``0 <= k < N``; None or empty → None. ValueError on anything else."""
    if not text:
        return None
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"must look like k/N (e.g. 0/2), not {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"{text}: need 0 <= k < N")
    return k, n


def parse_segment_leads(text: str | None) -> tuple[str, ...]:
    """``"ii,V1"`` → ``("II", "V1")``; ``"all"`` → ``("all",)``; None → (). ValueError on a name that is no lead."""
    if not text:
        return ()
    leads = tuple(x if x.strip().lower() == "all" else canonical_lead(x) for x in text.split(","))
    bad = [x for x in leads if x != "all" and x not in SEGMENT_LEADS]
    if bad or (len(leads) > 1 and "all" in leads):
        raise ValueError(f"{text!r}: give lead names ({', '.join(LEADS_12)}, MLII), comma-separated, or 'all'"
                         + (f"; {bad[0]!r} is not a lead" if bad else ""))
    return tuple(x.lower() if x.lower() == "all" else x for x in leads)


# ---------------------------------------------------------------------------------------------- options
LogLevelOpt = Annotated[str, choice_option("--log-level", help="Logging level.", choices=LOG_LEVELS)]
EngineOpt = Annotated[list[Path] | None, typer.Option(
    "--engine", help="Engine folder to load (repeat for a segmentation and a classification engine). "
                     f"Default: the engines shipped with the package ({ENGINES_ENV} overrides the folder).")]
NoEnginesOpt = Annotated[bool, typer.Option("--no-engines", help="Load no engine: beats and beat-based rhythm only.")]
BackendOpt = Annotated[str, choice_option("--backend", help="Inference backend: auto is TensorRT when a plan and a "
                                                            "GPU are present, else ONNX Runtime.", choices=BACKENDS)]
ThreadsOpt = Annotated[int, typer.Option(min=1, max=64, help="ONNX Runtime intra-op threads per engine (1 is "
                                                               "best on small CPUs: no spinning pool; see "
                                                               "bench/README.md).")]
MaxBatchOpt = Annotated[int, typer.Option(min=1, max=4096, help="Most windows per engine call, across all devices.")]
MaxWaitOpt = Annotated[float, number_option("--max-wait-ms", ge=0, le=10_000,
                                            help="Longest a window waits for others to fill a batch, ms.")]
HoldOpt = Annotated[float, number_option(
    "--hold-ms", ge=0, le=2000, help="Longest a device's chunks wait in their worker's queue for the next ones, ms, "
    "so that they are processed as one block: less CPU per device-second, beats published up to this much later "
    "(the same beats, classes and episodes). 0: every chunk at once.")]
SegLeadsOpt = Annotated[str | None, typer.Option(
    "--segment-leads", callback=_parse_check(lambda v: parse_segment_leads(v)),
    help="Leads to segment per beat, comma-separated, or 'all' (default: two leads, II and I, else MLII and the "
         "second channel; a T end and QT are kept only where they agree).")]
HopOpt = Annotated[float, number_option("--rhythm-hop-s", gt=0, le=600, help="Period of rhythm messages per "
                                                                             "device, s.")]
DiagnosisEveryOpt = Annotated[float, number_option(
    "--diagnosis-every-s", gt=0, le=3600, help="Run the diagnosis classifier (PTB-XL superclasses of the 10 s "
    "window) on a device's rhythm window at most this often, s of device time; the rhythm messages between carry "
    "its last answer (diagnosis_t_end). At or below --rhythm-hop-s: every rhythm message.")]
RefreshOpt = Annotated[float, number_option("--refresh-hz", gt=0, le=60, help="Screen refreshes per second.")]
DurationOpt = Annotated[float | None, number_option("--duration-s", gt=0, help="Stop after this many seconds "
                                                                               "(default: Ctrl-C / SIGTERM).")]
HttpHostOpt = Annotated[str, typer.Option(
    "--http-host", help="Bind address of the live page. Anything but 127.0.0.1 / localhost needs "
                        "--http-credentials (see docs/web.md).")]
HttpCredentialsOpt = Annotated[Path | None, typer.Option(
    "--http-credentials", allow_from_autoenv=False,  # its variable holds user:password itself, not a path
    help=f"File whose first line is user:password: HTTP Basic authentication for the live page (or set "
         f"{CREDENTIALS_ENV}).")]
ConfigOpt = Annotated[Path | None, cfg.config_option()]


def mqtt_settings(broker: BrokerAddress | None = None, mqtt: MqttOptions | None = None,
                  mqtt_version: str | None = None, **options: Any) -> MqttSettings:
    """Validated MqttSettings from a command's broker options (raises typer.Exit with a clear message on bad input).

    Args:
        broker / mqtt_version: replace the given address and protocol (an embedded broker).
        mqtt: the command's options; without it, ``options`` are :class:`MqttOptions` fields.
    """
    mqtt = mqtt or MqttOptions(broker=None, **options)
    try:
        settings = mqtt.settings(broker, mqtt_version)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if settings.tls_insecure:
        err.print("[bold yellow]WARNING: --tls-insecure: the broker's certificate is NOT verified; "
                  "anyone on the path can read and forge ECG data.[/]")
    return settings


def engines_root() -> Path:
    """Where the default engines are looked for: ``$BEATSSL_ENGINES``, else the installed ``engines`` package."""
    env = os.environ.get(ENGINES_ENV)
    if env:
        return Path(env)
    try:
        return Path(str(resources.files("engines")))
    except ModuleNotFoundError:  # an editable install from before engines/ became a package: reinstall it
        raise fail(f"the engines package is not installed; set {ENGINES_ENV} to the engines folder, or reinstall "
                   f"beatssl-edge") from None


def default_engines() -> list[Path]:
    """The default engine folders: every folder with a manifest.json in :func:`engines_root`."""
    return sorted(p.parent for p in engines_root().glob("*/manifest.json"))


def engine_options(engine: list[Path] | None, no_engines: bool, segment_leads: str | None) -> dict:
    """EdgeConfig keyword arguments for the engine options (validated; no default engine found is an error)."""
    if no_engines:
        return {"engines": ()}
    folders = tuple(engine) if engine else tuple(default_engines())
    if not folders:
        raise fail(f"no engines found in {engines_root()} (no */manifest.json there): set {ENGINES_ENV} to the "
                   f"engines folder, give --engine DIR, or run without models with --no-engines")
    for folder in folders:
        if not (Path(folder) / "manifest.json").is_file():
            raise fail(f"--engine {folder}: no manifest.json there")
    return {"engines": folders, "seg_leads": parse_segment_leads(segment_leads)}


def read_alarm_limits(path: Path | None) -> tuple[AlarmLimits, dict[str, AlarmLimits]]:
    """Alarm limits for every device and per-device overrides from a TOML file (None: the defaults); a bad file or
    value is one CLI error line."""
    if path is None:
        return AlarmLimits(), {}
    try:
        table = cfg.tomllib.loads(path.read_text())
        devices = table.pop("devices", {})
        default = AlarmLimits.from_mapping(table)
        per_device = {}
        for device, values in devices.items():
            if not proto.valid_device_id(device) or not isinstance(values, dict):
                raise ValueError(f"[devices.{device!r}] must be a table named by a valid device id")
            per_device[device] = AlarmLimits.from_mapping({**table, **values})
    except OSError as exc:
        raise fail(f"--alarm-limits {path}: {exc.strerror or exc}") from None
    except (cfg.tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise fail(f"--alarm-limits {path}: {exc}") from None
    return default, per_device


def supervise(ctx: typer.Context, settings: MqttSettings, node: str, processes: int, failover: bool,
              connect_timeout_s: float, duration_s: float | None, embedded: EmbeddedBroker | None) -> int:
    """``run --processes N``: N worker processes with this command's options under an
    :class:`edge.supervisor.Supervisor` until SIGTERM / SIGINT or ``duration_s``; returns the exit code."""
    args = command_args(ctx, skip=("processes", "node", "partition", "config", "client_id", "duration_s"))
    if embedded is not None:  # the workers use the broker this process started
        args += ["--broker", f"{embedded.address.host}:{embedded.address.port}", "--mqtt-version", settings.protocol]
    supervisor = Supervisor(settings, node, processes, args, partitioned=not failover)
    stop = threading.Event()
    on_signal(stop)
    supervisor.start()
    deadline = time.monotonic() + connect_timeout_s
    while not supervisor.connected.wait(0.1) and not stop.is_set():
        if time.monotonic() >= deadline:
            supervisor.stop()
            raise fail(f"could not reach the broker at {settings.broker} within {connect_timeout_s:g} s "
                       f"(--connect-timeout-s)", code=1)
    end = None if duration_s is None else time.monotonic() + duration_s
    while not stop.wait(0.2) and (end is None or time.monotonic() < end) and not supervisor.failed.is_set():
        pass
    code = supervisor.stop()
    if supervisor.failed.is_set():
        raise fail(f"node failed: {supervisor.failure}", code=2)
    return code


def build_edge(config: EdgeConfig) -> EdgeApp:
    """EdgeApp from a config, turning engine-loading problems into a clear CLI error."""
    try:
        return EdgeApp(config)
    except (ManifestError, EngineError, ValueError) as exc:
        raise fail(f"cannot load the engines: {exc}") from None


def web_server(settings: MqttSettings, host: str, port: int, credentials_file: Path | None) -> WebServer:
    """The live page's server, bound but not started; a clear CLI error when it must not or cannot run.

    The page subscribes with its own client id (``<client id>-page``): two clients with one id knock each other off
    the broker."""
    if settings.client_id:
        settings = dataclasses.replace(settings, client_id=f"{settings.client_id}-page")
    try:
        return WebServer(settings, host, port, read_credentials(credentials_file))
    except InsecureBindError as exc:
        raise fail(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise fail(f"live page on {host}:{port}: {exc}") from None


def start_embedded_broker() -> EmbeddedBroker:
    """An embedded broker on 127.0.0.1:1883, or on a free port when 1883 is taken (a clear error if none starts)."""
    try:
        return EmbeddedBroker(preferred_port=DEFAULT_PORT).start()
    except (RuntimeError, OSError, TimeoutError) as exc:
        raise fail(f"cannot start an embedded broker: {exc}") from None


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def on_signal(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set ``stop``."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())


# ---------------------------------------------------------------------------------------------- run
@app.command(context_settings=cfg.ENV_CONTEXT)
@mqtt_options(embedded_broker=True)
def run(
    ctx: typer.Context,
    mqtt: MqttOptions,
    config: ConfigOpt = None,
    node: Annotated[str | None, typer.Option(
        callback=_check_name, help="Node name in beatssl/edge/<node>/health (default: hostname).")] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker threads; devices are spread over them.")] = 2,
    partition: Annotated[str | None, typer.Option(
        callback=_parse_check(lambda v: parse_partition(v)),
        help="Handle only share k of N (stable hash of the device id), e.g. 0/2, for several workers.")] = None,
    shared_group: Annotated[str | None, typer.Option(
        callback=_check_name,
        help="Subscribe via the MQTT 5 shared subscription $share/GROUP/ecg/+/samples (EMQX with a sticky or "
             "hash_topic strategy; NOT mosquitto, which round-robins a device's chunks over workers).")] = None,
    processes: Annotated[int, typer.Option(
        min=1, max=256, help="Edge worker processes under one supervisor, each with its own engines and batch "
                             "scheduler (worker k handles --partition k/N, or its rendezvous share with "
                             "--failover); the node's health is their sum (docs/deploy.md).")] = 1,
    failover: Annotated[bool, typer.Option(
        "--failover", help="Fail over between nodes: take all samples and every node's health, handle a device iff "
                           "this node is its rendezvous winner among the live nodes of --cluster (MQTT 5).")] = False,
    cluster: Annotated[str, typer.Option(callback=_check_name,
                                         help="Cluster of --failover: nodes of other clusters are no peers.")] = "edge",
    stale_after_s: Annotated[float, number_option("--stale-after-s", gt=0, le=3600, help="Seconds without data "
                                                  "before a device is flushed and reported stale (paused while "
                                                  "the node is cut off from the broker).")] = 5.0,
    forget_after_s: Annotated[float, number_option("--forget-after-s", gt=0, le=86_400, help="Seconds without data "
                                                   "before a device's state is dropped.")] = 300.0,
    max_devices: Annotated[int, typer.Option(min=1, max=1_000_000, help="Most devices held at once; chunks of "
                                                                       "further devices are dropped (device_cap).")]
    = 5000,
    session_expiry_s: Annotated[int, typer.Option(min=0, max=604_800, help="How long the broker keeps this node's "
                                                                         "session (and queues its chunks) after a "
                                                                         "disconnect or crash, s (MQTT 5).")] = 3600,
    alarm_limits: Annotated[Path | None, typer.Option(
        "--alarm-limits", exists=False, help="TOML file of alarm limits: top-level keys for every device "
                                             "(brady_bpm, tachy_bpm, pause_s, vt_run_beats, vt_rate_bpm, latching, "
                                             "enabled), [devices.\"<id>\"] tables for per-device overrides "
                                             "(docs/alarms.md).")] = None,
    max_payload_kb: Annotated[int, typer.Option(min=1, max=65536, help="Largest accepted samples payload, "
                                                                       "KiB.")] = 256,
    max_leads: Annotated[int, typer.Option(min=1, max=64, help="Most leads accepted per stream.")] = 16,
    min_fs_hz: Annotated[float, number_option("--min-fs-hz", gt=0, le=100_000,
                                              help="Lowest accepted sampling rate, Hz.")] = proto.Limits.min_fs_hz,
    max_fs_hz: Annotated[float, number_option("--max-fs-hz", gt=0, le=100_000,
                                              help="Highest accepted sampling rate, Hz.")] = proto.Limits.max_fs_hz,
    duration_s: DurationOpt = None,
    connect_timeout_s: Annotated[float, number_option(
        "--connect-timeout-s", gt=0, le=600,
        help="Exit (code 1) when the broker is not reached within this many seconds of the start; once connected, "
             "a lost broker is retried for ever.")] = 30.0,
    engine: EngineOpt = None,
    no_engines: NoEnginesOpt = False,
    backend: BackendOpt = "auto",
    threads: ThreadsOpt = 1,
    max_batch: MaxBatchOpt = 64,
    max_wait_ms: MaxWaitOpt = 20.0,
    hold_ms: HoldOpt = 160.0,
    segment_leads: SegLeadsOpt = None,
    rhythm_hop_s: HopOpt = 2.0,
    diagnosis_every_s: DiagnosisEveryOpt = 10.0,
    metrics_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Serve Prometheus metrics on "
                                                                            "http://127.0.0.1:PORT/metrics.")] = None,
    http_port: Annotated[int | None, typer.Option(
        "--http-port", min=0, max=65535,
        help="Serve the live page (browser) on this port (0: a free one); default: no page.")] = None,
    http_host: HttpHostOpt = "127.0.0.1",
    http_credentials: HttpCredentialsOpt = None,
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
    if min_fs_hz > max_fs_hz:
        raise fail(f"need --min-fs-hz <= --max-fs-hz, not {min_fs_hz:g} and {max_fs_hz:g}")
    if shared_group is not None and mqtt.mqtt_version != "5":
        raise fail("--shared-group needs MQTT 5")
    if failover and (partition is not None or shared_group is not None):
        raise fail("--failover decides the share by rendezvous: not with --partition or --shared-group")
    if cluster != "edge" and not failover:
        raise fail("--cluster names the peers of --failover: give --failover")
    if processes > 1 and partition is not None:
        raise fail("--processes gives worker k the partition k/N: not with --partition")
    if processes > 1 and (http_port is not None or metrics_port is not None):
        raise fail("--http-port / --metrics-port serve one process: not with --processes (the node's health on "
                   "the broker sums its workers)")
    engines = engine_options(engine, no_engines, segment_leads)
    limits = proto.Limits(max_payload_bytes=max_payload_kb * 1024, max_leads=max_leads, min_fs_hz=min_fs_hz,
                          max_fs_hz=max_fs_hz)
    with contextlib.ExitStack() as stack:
        embedded = None
        if mqtt.broker is None:
            embedded = start_embedded_broker()
            stack.callback(embedded.stop)
            taken = "" if embedded.port == DEFAULT_PORT else f" ({DEFAULT_PORT} is taken)"
            err.print(f"started an embedded {embedded.kind} broker on {embedded.address}{taken}", highlight=False)
            if shared_group is not None and not embedded.mqtt5:
                raise fail("--shared-group needs MQTT 5, which the in-process broker does not speak")
        settings = mqtt_settings(embedded.address if embedded else None, mqtt,
                                 None if embedded is None or embedded.mqtt5 else "3.1.1")
        if failover and not settings.mqtt5:
            raise fail("--failover needs MQTT 5 (a node's session must end with its connection)")
        if processes > 1:
            raise typer.Exit(supervise(ctx, settings, node or socket.gethostname(), processes, failover,
                                       connect_timeout_s, duration_s, embedded))
        settings = dataclasses.replace(settings, session_expiry_s=session_expiry_s)
        default_limits, device_limits = read_alarm_limits(alarm_limits)
        config = EdgeConfig(mqtt=settings, workers=workers, partition=parse_partition(partition),
                            shared_group=shared_group, cluster=cluster if failover else None,
                            stale_after_s=stale_after_s, forget_after_s=forget_after_s,
                            max_devices=max_devices, alarm_limits=default_limits, device_alarm_limits=device_limits,
                            limits=limits, backend=backend,
                            threads=threads, max_batch=max_batch, max_wait_ms=max_wait_ms, hold_ms=hold_ms,
                            rhythm_hop_s=rhythm_hop_s,
                            diagnosis_every_s=diagnosis_every_s,
                            **engines, **({"node": node} if node else {}))
        edge = build_edge(config)
        if metrics_port is not None:
            try:
                metrics = MetricsServer(lambda: edge.health("online"), metrics_port)
            except OSError as exc:
                raise fail(f"--metrics-port {metrics_port}: cannot listen on 127.0.0.1:{metrics_port}: "
                           f"{exc.strerror or exc}") from None
            stack.callback(metrics.stop)
        web = web_server(settings, http_host, http_port, http_credentials) if http_port is not None else None
        stop = threading.Event()
        on_signal(stop)
        edge.start()
        stack.callback(edge.stop)
        for task, e in edge.engines.items():
            err.print(f"{task} engine {e.manifest.name} on {e.backend.name}", highlight=False)
        if metrics_port is not None:
            metrics.start()
        if web is not None:
            stack.callback(web.stop)
            err.print(f"live page on {web.start().url}", highlight=False)
        deadline = time.monotonic() + connect_timeout_s
        while not edge.wait_connected(0.1) and not stop.is_set():
            if time.monotonic() >= deadline:
                raise fail(f"could not reach the broker at {settings.broker} within {connect_timeout_s:g} s "
                           f"(--connect-timeout-s)", code=1)
        end = None if duration_s is None else time.monotonic() + duration_s
        while not stop.wait(0.2) and (end is None or time.monotonic() < end):
            if edge.failed.is_set():  # the watchdog saw a thread die: never run on as a silent half-node
                raise fail(f"node failed: {edge.failure}", code=1)


# ---------------------------------------------------------------------------------------------- detect
@app.command()
def detect(
    record: Annotated[Path, typer.Argument(help="WFDB record path without extension, e.g. data/mitdb/100.")],
    leads: Annotated[str | None, typer.Option(help="Comma-separated leads to use (default: all).")] = None,
    chunk_ms: Annotated[float, number_option("--chunk-ms", gt=0, le=600_000, help="Feed the pipeline in chunks of "
                                             "this many ms, as a device would; beats are the same whatever the "
                                             "chunking (only latency_s differs).")] = 40.0,
    engine: EngineOpt = None,
    no_engines: NoEnginesOpt = False,
    backend: BackendOpt = "auto",
    segment_leads: SegLeadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as one JSON document: {record, "
                                                          "fs, leads, beats:[{sample, time, class, ...}], episodes:"
                                                          "[{type, start, end}], rhythm, alarms} (docs/protocol.md)."
                                          )] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the beats as CSV (sample, time, class, rr_s, "
                                                     "hr_bpm, latency_s).")] = None,
    plot: Annotated[Path | None, typer.Option(help="Also draw the record with its beats (and the reference beats "
                                                   "of its .atr file, if any) into this PNG.")] = None,
) -> None:
    """Run the whole edge pipeline offline on a WFDB record: the same device stream as `run` (beat detection,
    segmentation, beat classes, rhythm, episodes, alarms) with the same engines, every window answered at once.
    Needs the 'sim' extra (WFDB reading), and the 'plots' extra for --plot."""
    from offline.detect import detect_record_file
    from offline.records import RecordError

    if plot is not None:
        import matplotlib  # noqa: F401 - before the work: a missing 'plots' extra is reported at once
    config = EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", DEFAULT_PORT)), backend=backend,
                        **engine_options(engine, no_engines, segment_leads))
    try:
        plan, engines = load_plan(config)
    except (ManifestError, EngineError, ValueError) as exc:
        raise fail(f"cannot load the engines: {exc}") from None
    try:
        result = detect_record_file(record, engines, plan, leads=leads.split(",") if leads else None,
                                    chunk_s=chunk_ms / 1000.0)
    except RecordError as exc:
        raise fail(str(exc)) from None
    finally:
        for e in engines.values():
            e.close()
    beats = result["beats"]
    if out is not None:
        fields = ["sample", "time", "class", "rr_s", "hr_bpm", "latency_s"]
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(beats)
    if plot is not None:
        from offline.plots import plot_record_beats
        from offline.records import read_annotations, read_record
        from offline.scoring import beat_samples

        rec = read_record(record, leads=leads.split(",") if leads else None)
        try:
            truth = beat_samples(*read_annotations(record))
        except RecordError:
            truth = None
        plot_record_beats(rec.signal_mv, rec.fs_hz, rec.leads, [b["sample"] for b in beats], plot, truth=truth,
                          title=rec.name)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
        return
    duration = result["duration_s"]
    hr = 60.0 * len(beats) / duration if duration else 0.0
    classes = {}
    for b in beats:
        if b.get("class"):
            classes[b["class"]] = classes.get(b["class"], 0) + 1
    episodes = [e for e in result["episodes"] if e["type"] != "N"]
    Console().print(f"{result['record']}: {len(beats)} beats in {duration:.1f} s ({hr:.0f} bpm mean), "
                    f"fs {result['fs']:g} Hz, leads {', '.join(result['leads'])}"
                    + (f"; classes {classes}" if classes else "") + f"; {len(episodes)} episodes"
                    + (f"; written to {out}" if out else "") + (f"; plot in {plot}" if plot else ""),
                    highlight=False)


# ---------------------------------------------------------------------------------------------- demo / view
@app.command()
def demo(
    config: ConfigOpt = None,
    devices: Annotated[int, typer.Option(min=1, max=500, help="Virtual devices replaying the bundled sample.")] = 6,
    speed: Annotated[float, number_option("--speed", gt=0, le=1000, help="Replay speed: 1 = real time.")] = 1.0,
    duration_s: DurationOpt = None,
    refresh_hz: RefreshOpt = 4.0,
    engine: EngineOpt = None,
    no_engines: NoEnginesOpt = False,
    backend: BackendOpt = "auto",
    http_port: Annotated[int, typer.Option("--http-port", min=0, max=65535,
                                           help="Port of the live page (0: a free one).")] = 0,
    http_host: HttpHostOpt = "127.0.0.1",
    http_credentials: HttpCredentialsOpt = None,
    log_level: LogLevelOpt = "warning",
) -> None:
    """Start a broker, the simulator (bundled sample records, looping) and the edge, and show a live view in the
    terminal and in the browser (the URL is printed). Needs the 'demo' extra."""
    from beatssl.demo import run_demo

    setup_logging(log_level)
    run_demo(devices, speed, duration_s, refresh_hz,
             edge_options={"backend": backend, **engine_options(engine, no_engines, None)},
             make_web=lambda settings: web_server(settings, http_host, http_port, http_credentials),
             make_edge=build_edge, say=lambda line: err.print(line, highlight=False))


@app.command()
@mqtt_options()
def view(
    mqtt: MqttOptions,
    config: ConfigOpt = None,
    refresh_hz: RefreshOpt = 4.0,
) -> None:
    """Live terminal view of what edge nodes publish on a broker (beats, status, errors, health)."""
    from rich.live import Live

    from viewers.terminal import LiveView

    lv = LiveView(mqtt_settings(mqtt=mqtt)).start()
    stop = threading.Event()
    on_signal(stop)
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
