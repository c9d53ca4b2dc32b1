"""``simulator``: replay ECG records over MQTT as virtual devices, with their reference annotations beside them.

    simulator replay ptbxl --data DIR [--ids 6000,6001] [--fold 10] [--count N] [--rate 500|100|auto]
    simulator replay wfdb DIR [--records 100,101] [--count N]
    simulator replay sample
    simulator list ptbxl|wfdb|sample …

Bad input (missing folder, unknown record, bad broker address, unreachable broker) prints one ``error:`` line on
stderr and exits with code 2.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live

from edge.config import Commands, config_option
from edge.transport.options import MqttOptions, mqtt_options
from simulator.replay import DEVICE_NAMINGS, FORMATS, Replayer, ReplayError, ReplaySummary
from simulator.sources import ReplaySource, SourceError, ptbxl_records, sample_records, wfdb_records

PTBXL_ENV = "BEATSSL_PTBXL"
PROGRESS_HZ = 4.0

app = typer.Typer(
    help="Replay ECG records (PTB-XL, MIT-BIH, LUDB, QTDB or any WFDB folder) over MQTT as virtual devices, in real "
         "time or faster, with the reference annotations on sim/<device>/truth.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=Commands,
)
replay_app = typer.Typer(help="Publish records on ecg/<device>/samples (and truth on sim/<device>/truth).",
                         no_args_is_help=True)
list_app = typer.Typer(help="Print the records a replay would use, one per line, without replaying them.",
                       no_args_is_help=True)
app.add_typer(replay_app, name="replay")
app.add_typer(list_app, name="list")

# ---------------------------------------------------------------------------------------------- options
DataOpt = Annotated[Path | None, typer.Option(
    "--data", envvar=PTBXL_ENV, show_default=False,
    help=f"PTB-XL folder (native PhysioNet layout: ptbxl_database.csv, records500/ and/or records100/). "
         f"Required, or set {PTBXL_ENV}.")]
IdsOpt = Annotated[str | None, typer.Option("--ids", help="PTB-XL ecg_id values to replay, comma-separated "
                                                          "(e.g. 6000,6001).")]
FoldOpt = Annotated[str | None, typer.Option("--fold", help="PTB-XL strat_fold values (1-10) to keep, "
                                                            "comma-separated.")]
CountOpt = Annotated[int | None, typer.Option("--count", min=1, help="Use at most this many records (after the "
                                                                     "other filters).")]
RateOpt = Annotated[str, typer.Option("--rate", help="PTB-XL sampling rate, Hz: 500 (records500/), 100 "
                                                     "(records100/) or auto (500 when present). A missing folder "
                                                     "falls back to the other with a warning.")]
WfdbDirArg = Annotated[Path, typer.Argument(help="WFDB folder (RECORDS file or *.hea, also in a data/ subfolder "
                                                 "as in LUDB).", show_default=False)]
RecordsOpt = Annotated[str | None, typer.Option("--records", help="Record names to replay, comma-separated "
                                                                  "(e.g. 100,101).")]
DevicesOpt = Annotated[int, typer.Option("--devices", min=1, max=10_000, help="Virtual devices; each plays its "
                                                                              "own record, round-robin.")]
def _check_speed(value: str) -> str:
    try:
        _speed(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return value


SpeedOpt = Annotated[str, typer.Option("--speed", callback=_check_speed, help="Replay speed: 1 = real time, k = k "
                                       "times faster, max = as fast as the broker acknowledges. [x>0 or max]")]
ChunkOpt = Annotated[float, typer.Option("--chunk-ms", min=1, max=10_000, help="Signal per message, ms "
                                                                                "(rounded to whole samples).")]
LoopOpt = Annotated[bool, typer.Option("--loop/--no-loop", help="Start each record over at its end (seq and "
                                                                "device time keep increasing).")]
def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


FormatOpt = Annotated[str, typer.Option(
    "--format", callback=_one_of(FORMATS),
    help=f"Payload encoding: {' or '.join(FORMATS)} (JSON in mV; binary int16 at 200 adu/mV).")]
LeadsOpt = Annotated[str | None, typer.Option("--leads", help="Leads to send, comma-separated (e.g. I,II,V1; any "
                                                              "case). Default: all leads of each record.")]
DurationOpt = Annotated[float | None, typer.Option("--duration-s", min=0.001, help="Stop each device after this "
                                                                                  "much device time, s. Default: "
                                                                                  "the record's end (never with "
                                                                                  "--loop).")]
PrefixOpt = Annotated[str, typer.Option("--device-prefix", help="Device ids are <prefix>-000, <prefix>-001 … "
                                                                "(or <prefix>-<record> with --device-names "
                                                                "record).")]
NamingOpt = Annotated[str, typer.Option("--device-names", callback=_one_of(DEVICE_NAMINGS),
                                        help=f"Device id scheme: {' or '.join(DEVICE_NAMINGS)}.")]
ConfigOpt = Annotated[Path | None, config_option()]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress line (it is also off when stdout is "
                                                              "not a terminal).")]


class _Replay:
    """The options every ``replay`` command shares, turned into a running :class:`Replayer`."""

    def __init__(self, mqtt: MqttOptions, devices: int, speed: str, chunk_ms: float, loop: bool, fmt: str,
                 leads: str | None, duration_s: float | None, device_prefix: str, device_names: str, quiet: bool):
        self.options = dict(devices=devices, speed=_speed(speed), chunk_ms=chunk_ms, loop=loop, fmt=fmt,
                            leads=_split(leads), device_prefix=device_prefix, device_names=device_names)
        self.duration_s = duration_s
        self.quiet = quiet
        self.settings = mqtt.settings()
        if mqtt.tls_insecure:
            logging.getLogger(__name__).warning("--tls-insecure: the broker's certificate is NOT verified; anyone on "
                                                "the path can read and forge ECG data")

    def run(self, sources: list[ReplaySource]) -> ReplaySummary:
        replayer = Replayer(sources, self.settings, **self.options)
        stop = threading.Event()
        outcome: list[ReplaySummary | Exception] = []
        done = threading.Event()

        def work() -> None:
            try:
                outcome.append(replayer.run(stop_event=stop, duration_s=self.duration_s))
            except Exception as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
                outcome.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=work, name="replay")
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        console = Console()
        try:
            worker.start()
            if self.quiet or not console.is_terminal:
                _wait(done, stop, lambda: None)
            else:
                rate = _Rate()
                with Live(console=console, refresh_per_second=PROGRESS_HZ, transient=True) as live:
                    _wait(done, stop, lambda: live.update(_progress(replayer.snapshot(), rate)))
        finally:
            signal.signal(signal.SIGTERM, previous)
        worker.join()
        result = outcome[0]
        if isinstance(result, Exception):
            raise result
        return result


def _wait(done: threading.Event, stop: threading.Event, tick: Callable[[], None]) -> None:
    """Wait for ``done``, calling ``tick`` a few times a second; Ctrl-C asks the replay to stop and keeps waiting.

    (An Event, not ``Thread.join``: a join interrupted by Ctrl-C can leave ``is_alive()`` wrongly False.)
    """
    while not done.is_set():
        try:
            done.wait(1.0 / PROGRESS_HZ)
            tick()
        except KeyboardInterrupt:
            stop.set()


class _Rate:
    """Chunks per second between two progress updates."""

    def __init__(self) -> None:
        self.chunks = 0
        self.elapsed_s = 0.0

    def update(self, snap: ReplaySummary) -> float:
        dt = snap.elapsed_s - self.elapsed_s
        rate = (snap.chunks - self.chunks) / dt if dt > 0 else 0.0
        self.chunks, self.elapsed_s = snap.chunks, snap.elapsed_s
        return rate


def _progress(snap: ReplaySummary, rate: _Rate) -> str:
    line = (f"{snap.devices} devices · {rate.update(snap):.0f} chunks/s · {snap.speed:.1f}× real time · "
            f"{snap.device_seconds:.1f} s replayed")
    return line + (f" · {snap.dropped} dropped" if snap.dropped else "") + (
        f" · {snap.reconnects} reconnects" if snap.reconnects else "")


# ---------------------------------------------------------------------------------------------- replay
@replay_app.command("ptbxl")
@mqtt_options()
def replay_ptbxl(
    data: DataOpt = None, ids: IdsOpt = None, fold: FoldOpt = None, count: CountOpt = None, rate: RateOpt = "auto",
    devices: DevicesOpt = 1, speed: SpeedOpt = "1", chunk_ms: ChunkOpt = 40.0,
    loop: LoopOpt = False, fmt: FormatOpt = "json", leads: LeadsOpt = None, duration_s: DurationOpt = None,
    device_prefix: PrefixOpt = "sim", device_names: NamingOpt = "index", quiet: QuietOpt = False,
    config: ConfigOpt = None, *, mqtt: MqttOptions,
) -> None:
    """Replay PTB-XL records (native PhysioNet layout), chosen by id, fold and count."""
    _main(lambda: _ptbxl(data, ids, fold, count, rate), lambda: _Replay(
        mqtt, devices, speed, chunk_ms, loop, fmt, leads, duration_s, device_prefix, device_names, quiet))


@replay_app.command("wfdb")
@mqtt_options()
def replay_wfdb(
    folder: WfdbDirArg, records: RecordsOpt = None, count: CountOpt = None,
    devices: DevicesOpt = 1, speed: SpeedOpt = "1", chunk_ms: ChunkOpt = 40.0,
    loop: LoopOpt = False, fmt: FormatOpt = "json", leads: LeadsOpt = None, duration_s: DurationOpt = None,
    device_prefix: PrefixOpt = "sim", device_names: NamingOpt = "index", quiet: QuietOpt = False,
    config: ConfigOpt = None, *, mqtt: MqttOptions,
) -> None:
    """Replay the records of a WFDB folder (MIT-BIH, QTDB, LUDB …), with their .atr beats and wave annotations."""
    _main(lambda: wfdb_records(folder, names=_split(records), count=count), lambda: _Replay(
        mqtt, devices, speed, chunk_ms, loop, fmt, leads, duration_s, device_prefix, device_names, quiet))


@replay_app.command("sample")
@mqtt_options()
def replay_sample(
    devices: DevicesOpt = 6, speed: SpeedOpt = "1", chunk_ms: ChunkOpt = 40.0,
    loop: LoopOpt = True, fmt: FormatOpt = "json", leads: LeadsOpt = None, duration_s: DurationOpt = None,
    device_prefix: PrefixOpt = "sim", device_names: NamingOpt = "index", quiet: QuietOpt = False,
    config: ConfigOpt = None, *, mqtt: MqttOptions,
) -> None:
    """Replay the bundled sample (4 LUDB 12-lead records, 2 one-minute MIT-BIH excerpts); loops by default."""
    _main(sample_records, lambda: _Replay(
        mqtt, devices, speed, chunk_ms, loop, fmt, leads, duration_s, device_prefix, device_names, quiet))


# ---------------------------------------------------------------------------------------------- list
@list_app.command("ptbxl")
def list_ptbxl(data: DataOpt = None, ids: IdsOpt = None, fold: FoldOpt = None, count: CountOpt = None,
               rate: RateOpt = "auto") -> None:
    """Print the PTB-XL records a replay would use: name, ecg_id, fold, superclasses, path."""
    _main(lambda: _ptbxl(data, ids, fold, count, rate))


@list_app.command("wfdb")
def list_wfdb(folder: WfdbDirArg, records: RecordsOpt = None, count: CountOpt = None) -> None:
    """Print the records of a WFDB folder a replay would use: name and path."""
    _main(lambda: wfdb_records(folder, names=_split(records), count=count))


@list_app.command("sample")
def list_sample() -> None:
    """Print the records of the bundled sample."""
    _main(sample_records)


# ---------------------------------------------------------------------------------------------- helpers
def _main(select: Callable[[], list[ReplaySource]], make: Callable[[], _Replay] | None = None) -> None:
    """Select records, then list them (``make`` None) or replay them; bad input → one error line, exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    try:
        sources = select()
        if make is None:
            for src in sources:
                typer.echo(_describe(src))
            return
        summary = make().run(sources)
    except (SourceError, ReplayError, ValueError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(summary.as_dict()))


def _describe(src: ReplaySource) -> str:
    fields = [src.name]
    if src.dataset == "ptbxl":
        fields += [f"ecg_id={src.info['ecg_id']}", f"fold={src.info['strat_fold']}", ",".join(src.labels) or "-"]
    return "\t".join([*fields, str(src.path)])


def _ptbxl(data: Path | None, ids: str | None, fold: str | None, count: int | None, rate: str) -> list[ReplaySource]:
    if data is None:
        raise SourceError(f"give the PTB-XL folder with --data DIR (or set {PTBXL_ENV})")
    return ptbxl_records(data, ids=_ints(ids, "--ids"), folds=_ints(fold, "--fold"), count=count, rate=rate)


def _split(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; None or empty → None."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or None


def _ints(text: str | None, option: str) -> list[int] | None:
    items = _split(text)
    if items is None:
        return None
    bad = [t for t in items if not t.isdigit()]
    if bad:
        raise ValueError(f"{option} takes comma-separated whole numbers, not {bad[0]!r}")
    return [int(t) for t in items]


def _speed(text: str) -> float:
    """``"max"`` / ``"inf"`` → inf; else a positive number (1 = real time)."""
    if text.strip().lower() in ("max", "inf"):
        return math.inf
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--speed must be a positive number or max, not {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"--speed must be a positive number or max, not {text!r}")
    return value


if __name__ == "__main__":  # pragma: no cover - `python -m simulator.cli`: the `simulator` console script
    from beatssl.cli import simulator_main

    simulator_main()
