"""CPU seconds of the edge process per twelve-lead 500 Hz device-second: today's code against a baseline commit,
in the same run, on the same box, through the same mosquitto.

One mosquitto (127.0.0.1, a free port) serves every variant in turn. A variant is one edge process
(``run --broker 127.0.0.1:PORT --node cpu-<variant> --workers 2`` plus its engine options) of either

* the **current** code (this working tree, ``python -m beatssl.cli run``), or
* the **baseline** commit (``git worktree add --detach`` in a temporary folder, its own ``beatssl-edge`` entry run
  there with ``PYTHONPATH`` set to it, :mod:`baseline`), so its own packages shadow the editable install and its own
  ``engines/`` are the shipped ones).

Once its retained health says ``online``, this process replays ``--devices`` LUDB records (12 leads, 500 Hz, binary
int16 payloads, 40 ms chunks, looping) as that many devices in real time with the current simulator
(:class:`simulator.replay.Replayer`, in a thread here). After ``--warm-s`` of replay the edge's CPU time (utime +
stime of ``/proc/<pid>/stat``, plus its live descendants if it has any) is read, again ``--duration-s`` later, and
the difference is divided by devices x window wall seconds (real time: one device-second per device per second).
``--repeats R`` runs every variant once per round, R rounds in turn; the table shows the median and min-max over
rounds, and each ratio is the median of the ratios taken within a round (the shared box's load drifts over minutes).

Kept up (y/n): every device got its beats in the window (received >= expected - 1, expected from the simulator's own
loop timeline of each record's beats, :func:`simulator.replay.record_beats`), the edge dropped no publication and
rejected nothing, every health message in the window had at most 0.5 s of input in its queue (``queue_depth`` x
40 ms / devices), the p99 of ``proc_ms`` over the window's beats stayed within 500 ms (the real-time bound of
``bench/edge_throughput.py``), and the simulator kept its schedule (lag <= 0.5 s).

Usage::

    .venv/bin/python bench/edge_cpu.py                       # 20 devices, 30 s, 2 rounds, ~10 min, + JSON, PNG
    .venv/bin/python bench/edge_cpu.py --repeats 1           # one round, ~4 min
    .venv/bin/python bench/edge_cpu.py --devices 10 --duration-s 20 --variants base-none,cur-none
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
from baseline import add_worktree, edge_command, remove_worktree, terminate
from rich.console import Console
from rich.table import Table

from edge import protocol as proto
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, make_client
from offline.records import read_record
from simulator.replay import Replayer, loop_seams, record_beats
from simulator.sources import ReplaySource, wfdb_records
from simulator.truth import load_truth

ROOT = Path(__file__).resolve().parent.parent
DEVICE_PREFIX = "cpu"
CHUNK_MS = 40.0
#: beats whose R peak lies in the last this many seconds of the window may be published after it (the segmenter
#: waits for 1.6 s of signal after a beat): they are not counted.
BEAT_TAIL_S = 2.0
#: replay this long after the window, so the window sits in steady state and its last beats get their signal.
REPLAY_AFTER_S = 3.0
HEALTH_PERIOD_S = 5.0
#: kept up only while the edge's input queue holds at most this much input (s) and p99 of proc_ms stays below it:
#: the real-time bound of bench/edge_throughput.py (--p99-ms 500).
MAX_BACKLOG_S = 0.5


@dataclass(frozen=True)
class Variant:
    """One edge configuration: which code, which engine options, and which variant its ratio is taken against."""

    code: str                  # "current" or "baseline"
    args: tuple[str, ...]      # engine options for ``run``
    against: str | None        # the baseline variant with the same (or the shipped) engines


VARIANTS: dict[str, Variant] = {
    "base-none": Variant("baseline", ("--no-engines",), None),
    "cur-none": Variant("current", ("--no-engines",), "base-none"),
    "base": Variant("baseline", (), None),
    "cur-seg-rhythm": Variant("current", ("--engine", "engines/wave-seg", "--engine", "engines/rhythm-cls"), "base"),
    "cur-hold0": Variant("current", ("--hold-ms", "0"), "base"),
    "cur": Variant("current", (), "base"),
}


@dataclass
class Result:
    """One variant's run."""

    variant: str
    round: int
    code: str
    command: list[str]
    engines: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    window_s: float = 0.0
    device_seconds: float = 0.0
    ms_per_device_s: float = 0.0
    children: int = 0
    mosquitto_cpu_s: float = 0.0
    beats: int = 0
    beats_expected: int = 0
    devices_short: int = 0
    queue_depth_max: int = 0
    publish_dropped: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    proc_ms_p99_health: float | None = None
    proc_ms_p99_window: float | None = None
    replay: dict[str, float] = field(default_factory=dict)
    kept_up: bool = False
    reasons: list[str] = field(default_factory=list)
    loadavg_before: list[float] = field(default_factory=list)
    loadavg_after: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- CPU from /proc
def _stat_cpu_ticks(pid: int) -> int:
    """utime + stime of one process in clock ticks (fields 14 and 15 of /proc/<pid>/stat); 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": fields[0] is field 3 (state)
    return int(fields[11]) + int(fields[12])


def _descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def process_cpu_s(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) of ``pid`` and its live descendants, and how many descendants there are."""
    kids = _descendants(pid)
    ticks = _stat_cpu_ticks(pid) + sum(_stat_cpu_ticks(k) for k in kids)
    return ticks / os.sysconf("SC_CLK_TCK"), len(kids)


# ---------------------------------------------------------------------------------------------- expected beats
def looped_beat_times(source: ReplaySource, until_s: float) -> np.ndarray:
    """Device times (s) of a record's beats as the simulator plays it looped (first pass ``[0, end)``, later passes
    ``[first, end)``, :func:`simulator.replay.loop_seams`) up to ``until_s``."""
    record = read_record(source.path)
    truth = load_truth(source, record)
    beats = np.sort(record_beats(record.signal_mv, truth))
    first, end = loop_seams(beats, record.n_samples)
    times = [beats[beats < end] / truth.fs_hz]
    later = beats[(beats >= first) & (beats < end)] - first
    offset = end
    while offset / truth.fs_hz < until_s:
        times.append((later + offset) / truth.fs_hz)
        offset += end - first
    return np.concatenate(times)


# ---------------------------------------------------------------------------------------------- listener
class Listener:
    """Beats and the health of one node, as (topic, parsed payload)."""

    def __init__(self, settings: MqttSettings, node: str):
        self.items: list[tuple[str, dict]] = []
        self.health_topic = proto.health_topic(node)
        self._lock = threading.Lock()
        subscribed = threading.Event()
        topics = [proto.output_subscription("beats"), self.health_topic]
        self.client = make_client(settings, f"bench-cpu-{node}")
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.broker.host, settings.broker.port)
        self.client.loop_start()
        if not subscribed.wait(10):
            raise RuntimeError("bench listener could not subscribe")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.items.append((msg.topic, {**json.loads(msg.payload), "_rx": time.monotonic()}))

    def health(self) -> list[dict]:
        with self._lock:
            return [m for t, m in self.items if t == self.health_topic]

    def beats(self) -> list[dict]:
        with self._lock:
            return [m for t, m in self.items if t != self.health_topic]

    def wait_health(self, pred: object, timeout_s: float) -> dict | None:
        """The first health message for which ``pred(msg)`` holds, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.health():
                if pred(m):  # type: ignore[operator]
                    return m
            time.sleep(0.1)
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------------------------------------- one variant
def run_variant(name: str, rnd: int, args: argparse.Namespace, broker: EmbeddedBroker, baseline_dir: Path | None,
                records: list[ReplaySource], expected: dict[str, np.ndarray], console: Console) -> Result:
    v = VARIANTS[name]
    node = f"cpu-{name}"
    edge_cmd, cwd, env = [sys.executable, "-m", "beatssl.cli"], ROOT, dict(os.environ)
    if v.code == "baseline":
        assert baseline_dir is not None, "a baseline variant needs the baseline worktree"
        edge_cmd, cwd = edge_command(baseline_dir), baseline_dir
        env["PYTHONPATH"] = str(baseline_dir)
    cmd = [*edge_cmd, "run", "--broker", f"127.0.0.1:{broker.port}", "--node", node,
           "--workers", "2", "--log-level", "warning", *v.args]
    res = Result(variant=name, round=rnd, code=v.code, command=cmd[1:])
    settings = MqttSettings(broker.address)
    listener = Listener(settings, node)
    log_path = Path(tempfile.mkdtemp(prefix="bench-cpu-")) / "edge.log"
    res.loadavg_before = [round(x, 2) for x in os.getloadavg()]
    with open(log_path, "wb") as log_file:
        edge = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    stop = threading.Event()
    replay_thread = None
    try:
        online = listener.wait_health(lambda m: m.get("state") == "online", 90)
        if online is None:
            res.reasons.append("edge did not come online")
            return res
        res.engines = sorted(e.get("name", task) for task, e in (online.get("engines") or {}).items())
        replayer = Replayer(records, settings, devices=args.devices, speed=1.0, chunk_ms=CHUNK_MS, loop=True,
                            fmt="binary", device_prefix=DEVICE_PREFIX)
        total_s = args.warm_s + args.duration_s + REPLAY_AFTER_S
        replay_thread = threading.Thread(target=replayer.run, kwargs={"stop_event": stop, "duration_s": total_s},
                                         daemon=True)
        replay_thread.start()
        while replayer.snapshot().chunks == 0 and replay_thread.is_alive():
            time.sleep(0.01)
        time.sleep(args.warm_s)
        mosq = broker._proc.pid if broker._proc is not None else None
        cpu0, _ = process_cpu_s(edge.pid)
        mosq0 = process_cpu_s(mosq)[0] if mosq else 0.0
        t0, dev_t0 = time.monotonic(), replayer.snapshot().elapsed_s
        time.sleep(args.duration_s)
        cpu1, res.children = process_cpu_s(edge.pid)
        mosq1 = process_cpu_s(mosq)[0] if mosq else 0.0
        t1, dev_t1 = time.monotonic(), replayer.snapshot().elapsed_s
        replay_thread.join(REPLAY_AFTER_S + 30)
        res.replay = replayer.snapshot().as_dict()
        if edge.poll() is not None:
            res.reasons.append(f"edge exited with {edge.returncode}")
        res.cpu_s = round(cpu1 - cpu0, 3)
        res.mosquitto_cpu_s = round(mosq1 - mosq0, 3)
        res.window_s = round(t1 - t0, 3)
        res.device_seconds = round(args.devices * res.window_s, 1)
        res.ms_per_device_s = round(1e3 * res.cpu_s / res.device_seconds, 3)
        res.loadavg_after = [round(x, 2) for x in os.getloadavg()]
        # the health message after the replay has every beat of the window in its counters
        last = listener.wait_health(lambda m: m["_rx"] > t1 + REPLAY_AFTER_S and m.get("state") == "online",
                                    HEALTH_PERIOD_S + 5)
        analyse(res, listener, expected, (dev_t0, dev_t1), (t0, t1 + REPLAY_AFTER_S), last, args.devices)
    finally:
        stop.set()
        if replay_thread is not None:
            replay_thread.join(30)
        terminate(edge)
        listener.close()
    if res.reasons:
        console.print(f"[dim]{name}: {'; '.join(res.reasons)} (edge log: {log_path})[/dim]")
    else:
        shutil.rmtree(log_path.parent, ignore_errors=True)
    return res


def analyse(res: Result, listener: Listener, expected: dict[str, np.ndarray], device_window: tuple[float, float],
            wall_window: tuple[float, float], last: dict | None, devices: int) -> None:
    """Beats in the window vs expected, health counters, verdict."""
    lo, hi = device_window[0], device_window[1] - BEAT_TAIL_S
    got: dict[str, int] = dict.fromkeys(expected, 0)
    proc = []
    for m in listener.beats():
        if m.get("device") in got and lo <= m["time"] <= hi:
            got[m["device"]] += 1
            proc.append(m["proc_ms"])
    want = {d: int(((t >= lo) & (t <= hi)).sum()) for d, t in expected.items()}
    res.beats, res.beats_expected = sum(got.values()), sum(want.values())
    res.devices_short = sum(got[d] < want[d] - 1 for d in got)
    res.proc_ms_p99_window = round(float(np.percentile(proc, 99)), 2) if proc else None
    in_window = [m for m in listener.health() if wall_window[0] <= m["_rx"] <= wall_window[1] + HEALTH_PERIOD_S]
    res.queue_depth_max = max((m.get("queue_depth", 0) for m in in_window), default=0)
    if last is None:
        res.reasons.append("no health message after the replay")
    else:
        res.publish_dropped = last.get("publish_dropped", 0)
        res.rejected = dict(last.get("rejected") or {})
        res.proc_ms_p99_health = (last.get("processing_ms") or {}).get("p99")
    if res.devices_short:
        res.reasons.append(f"{res.devices_short} devices short of beats ({res.beats} of {res.beats_expected})")
    backlog_s = res.queue_depth_max * CHUNK_MS / 1e3 / devices
    if backlog_s > MAX_BACKLOG_S:
        res.reasons.append(f"queue held {backlog_s:.2f} s of input (depth {res.queue_depth_max})")
    if res.proc_ms_p99_window is not None and res.proc_ms_p99_window > 1e3 * MAX_BACKLOG_S:
        res.reasons.append(f"p99 proc_ms {res.proc_ms_p99_window} > {1e3 * MAX_BACKLOG_S:g}")
    if res.publish_dropped:
        res.reasons.append(f"{res.publish_dropped} publications dropped")
    if res.rejected:
        res.reasons.append(f"rejected {res.rejected}")
    if res.replay.get("max_lag_s", 0.0) > MAX_BACKLOG_S:
        res.reasons.append(f"simulator lagged {res.replay['max_lag_s']} s")
    res.kept_up = not res.reasons


# ---------------------------------------------------------------------------------------------- report
@dataclass
class Summary:
    """One variant over all rounds: medians (min-max), the same-round ratio to its baseline variant."""

    variant: str
    code: str
    engines: list[str]
    ms_per_device_s: float
    ms_min: float
    ms_max: float
    vs: str | None
    ratio: float | None            # median over rounds of (this / its baseline variant in the same round)
    ratios: list[float]
    proc_ms_p99_health_max: float | None
    queue_depth_max: int
    kept_up: bool                  # in every round


def summarise(results: list[Result]) -> list[Summary]:
    """Per variant, in run order; ratios are taken within a round (both variants measured minutes apart)."""
    by_round: dict[tuple[int, str], Result] = {(r.round, r.variant): r for r in results}
    out = []
    for name in dict.fromkeys(r.variant for r in results):
        runs = [r for r in results if r.variant == name]
        ms = [r.ms_per_device_s for r in runs]
        against = VARIANTS[name].against
        ratios = [round(r.ms_per_device_s / b.ms_per_device_s, 3) for r in runs
                  if against and (b := by_round.get((r.round, against))) and b.ms_per_device_s and r.ms_per_device_s]
        p99 = [r.proc_ms_p99_health for r in runs if r.proc_ms_p99_health is not None]
        out.append(Summary(
            variant=name, code=runs[0].code, engines=runs[0].engines, ms_per_device_s=round(float(np.median(ms)), 3),
            ms_min=min(ms), ms_max=max(ms), vs=against, ratio=round(float(np.median(ratios)), 3) if ratios else None,
            ratios=ratios, proc_ms_p99_health_max=max(p99) if p99 else None,
            queue_depth_max=max(r.queue_depth_max for r in runs), kept_up=all(r.kept_up for r in runs)))
    return out


def print_table(summary: list[Summary], rounds: int, console: Console) -> None:
    table = Table(title=f"edge CPU per 12-lead 500 Hz device-second (median of {rounds} round(s), min-max)")
    numeric = ("ms CPU / device-s", "min-max", "ratio", "p99 proc ms", "max queue")
    for col in ("variant", "code", "engines", "ms CPU / device-s", "min-max", "vs", "ratio", "p99 proc ms",
                "max queue", "kept up"):
        table.add_column(col, justify="right" if col in numeric else "left")
    for s in summary:
        table.add_row(s.variant, s.code, ", ".join(s.engines) or "none", f"{s.ms_per_device_s:.2f}",
                      f"{s.ms_min:.2f}-{s.ms_max:.2f}", s.vs or "", "" if s.ratio is None else f"{s.ratio:.2f}",
                      "" if s.proc_ms_p99_health_max is None else f"{s.proc_ms_p99_health_max:.1f}",
                      str(s.queue_depth_max), "y" if s.kept_up else "n")
    console.print(table)


def plot(summary: list[Summary], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    colors = ["#8b949e" if s.code == "baseline" else "#4c8dff" for s in summary]
    med = np.array([s.ms_per_device_s for s in summary])
    err = np.array([[m - s.ms_min for m, s in zip(med, summary, strict=True)],
                    [s.ms_max - m for m, s in zip(med, summary, strict=True)]])
    bars = ax.bar([s.variant for s in summary], med, yerr=err, capsize=4, color=colors)
    for bar, s in zip(bars, summary, strict=True):
        ax.annotate(f"{s.ms_per_device_s:.2f}\n{', '.join(s.engines) or 'no engines'}",
                    (bar.get_x() + bar.get_width() / 2, s.ms_max), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("edge CPU, ms per device-second (median, min-max)")
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.25)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def git_state() -> tuple[str, list[str]]:
    """HEAD of this working tree and its modified tracked files (the shared tree can change while a run lasts)."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout.splitlines()
    return head, [ln[3:] for ln in status]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--devices", type=int, default=20, help="simulated devices (LUDB records, one each)")
    p.add_argument("--duration-s", type=float, default=30.0, help="measured window per variant (s)")
    p.add_argument("--warm-s", type=float, default=5.0, help="replay before the window (s)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"comma-separated, in run order: {', '.join(VARIANTS)}")
    p.add_argument("--repeats", type=int, default=2,
                   help="rounds: every variant once per round, in turn; the table shows medians and min-max")
    p.add_argument("--baseline", default="35613ca",
                   help="baseline commit (its own beatssl-edge entry from its pyproject.toml, either layout)")
    p.add_argument("--ludb", type=Path, default=ROOT.parent / "shared" / "data" / "ludb", help="LUDB folder")
    p.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "edge_cpu.json",
                   help="results file; the chart goes beside it (.png)")
    args = p.parse_args(argv)
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.devices < 1 or args.duration_s <= 0 or args.warm_s < 0 or args.repeats < 1:
        p.error("--devices and --repeats must be >= 1, --duration-s > 0, --warm-s >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(width=160)
    records = wfdb_records(args.ludb, count=args.devices)
    until = args.warm_s + args.duration_s + REPLAY_AFTER_S + 5
    per_record = [looped_beat_times(s, until) for s in records]
    expected = {f"{DEVICE_PREFIX}-{i:03d}": per_record[i % len(records)] for i in range(args.devices)}
    needs_baseline = any(VARIANTS[v].code == "baseline" for v in args.variants)
    baseline_dir: Path | None = None
    rev = ""
    head, modified = git_state()
    load_start = [round(x, 2) for x in os.getloadavg()]
    t_start = time.time()
    results: list[Result] = []
    try:
        if needs_baseline:
            baseline_dir = add_worktree(args.baseline)
            rev = subprocess.run(["git", "-C", str(baseline_dir), "rev-parse", "HEAD"], check=True,
                                 capture_output=True, text=True).stdout.strip()
        with EmbeddedBroker(prefer="mosquitto-only") as broker:
            for rnd in range(args.repeats):
                for name in args.variants:
                    console.print(f"[bold]{name}[/bold] ({VARIANTS[name].code}), round {rnd + 1} ...")
                    r = run_variant(name, rnd, args, broker, baseline_dir, records, expected, console)
                    results.append(r)
                    console.print(f"  {r.ms_per_device_s:.2f} ms CPU per device-s, kept up: {r.kept_up}")
    finally:
        if baseline_dir is not None:
            remove_worktree(baseline_dir)
    summary = summarise(results)
    print_table(summary, args.repeats, console)
    head_end, modified_end = git_state()
    out = {
        "what": "edge process CPU (utime+stime, /proc) per 12-lead 500 Hz device-second, same run, same mosquitto",
        "date": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t_start)),
        "box": {"cpus": os.cpu_count(), "shared": True, "loadavg_start": load_start,
                "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "current": {"head": head, "modified_tracked_files": modified, "head_end": head_end,
                    "modified_tracked_files_end": modified_end},
        "baseline": {"rev": rev or None, "asked": args.baseline if needs_baseline else None},
        "devices": args.devices, "duration_s": args.duration_s, "warm_s": args.warm_s, "chunk_ms": CHUNK_MS,
        "format": "binary", "records": [s.name for s in records],
        "repeats": args.repeats,
        "summary": [asdict(s) for s in summary],
        "runs": [asdict(r) for r in results],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    png = args.json.with_suffix(".png")
    plot(summary, png, f"edge CPU per device-second, {args.devices} LUDB devices x {args.duration_s:g} s, "
                       f"{args.repeats} round(s), "
                       f"baseline {args.baseline} vs current {head[:7]}, {os.cpu_count()} shared vCPUs")
    console.print(f"wrote {args.json} and {png}")
    return 0 if all(r.ms_per_device_s > 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
