"""How many 12-lead 500 Hz devices one edge process keeps in real time on this machine, batched and unbatched.

Three processes per step, all on this machine, through a real mosquitto (started per step, 127.0.0.1):

* the **edge**: ``beatssl-edge run --broker … --node bench`` with the shipped engines (rhythm labels every 2 s per
  device, every beat segmented on lead II), ``--max-batch`` as the mode says;
* the **simulator**: ``simulator replay wfdb <ludb> --devices N --speed 1 --loop --duration-s D`` (LUDB 12-lead
  500 Hz records, looping, real time; ``--format`` binary int16 (default) or JSON, ``--chunk-ms`` 40);
* this process: a light paho subscriber to ``beatssl/+/beats``, ``beatssl/+/rhythm``, the edge's health and errors,
  and the samples of device 0 only (to pin the simulator's clock: device ``i`` publishes the chunk ending at device
  time ``t`` at wall time ``start + i/N·chunk + t``; ``start`` = the smallest arrival − t seen for device 0).

Latencies of a beat (its R peak at device time ``time``; the edge needs ``post`` = 1.6 s of signal after it):

* ``proc_ms`` (in the message): edge wall time from the arrival of the beat's last needed sample to publication.
  This is the issue's latency; its p99 over the measured beats must be ≤ ``--p99-ms`` (500).
* ``e2e_ms`` (measured here): receipt here − scheduled publication of the chunk holding sample ``time + post``:
  the same thing seen from outside, plus both MQTT hops and any backlog in front of the edge (socket, broker).
* ``r_to_msg_s``: receipt − scheduled publication of the R peak's chunk (includes the inherent 1.6 s wait).

A step (N devices, one mode) is **kept in real time** when, over the measured part (device time ``[warm, D]``):
every device sent beats and a rhythm message every hop (at most one missing), no beat lost its waves
(``stream_end`` / ``stream_restart`` / ``failed`` quality), the edge rejected nothing (overload, scheduler queue) and
dropped no publication, its input queue never held more than ``--p99-ms`` of input (sampled at each health
message, every 5 s: depth × chunk / N), the simulator kept its schedule (max lag
≤ 0.5 s), p99 of ``proc_ms`` and of ``e2e_ms`` are ≤ ``--p99-ms``, and rhythm messages leave at most one hop
(2 s) after their window closed (p99; beyond that the classifier builds a backlog). What the edge publishes once
the bench stops it (its SIGTERM flush: every run's last rhythm window, seconds after the replay ended) is not
counted: it used to be, and those few messages decided the rhythm p99 of some steps. N grows along ``--devices``
until the first step that fails; the largest N that passed is the result of that mode.

``--processes N`` runs every mode a second time as ``run --processes N`` (N worker processes under one supervisor;
the health it publishes on the same topic sums its workers', the edge's CPU is the supervisor and its workers), so
the largest N for 1 process and for N processes come from the same run. ``--baseline REV`` runs every mode once more
with the edge of commit REV (``git worktree`` in a temporary folder, its own ``beatssl-edge`` console script entry
run from there, with its own engines) beside the current code, so every ratio is same-run.

Usage::

    .venv/bin/python bench/edge_throughput.py --json bench/results/edge_throughput.json
    .venv/bin/python bench/edge_throughput.py --devices 50,100 --modes batched --profile 100   # py-spy profile
    .venv/bin/python bench/edge_throughput.py --devices 50,75 --modes batched --processes 2 --baseline 35613ca
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import paho.mqtt.client as paho
import psutil
from baseline import add_worktree, edge_command, remove_worktree, terminate
from rich.console import Console
from rich.table import Table

from edge import protocol as proto
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, make_client
from offline.plots import plot_scaling

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
NODE = "bench"
DEVICE_PREFIX = "sim"
SEG_POST_S = 1.6          # the shipped wave-seg window is centred: 1.6 s of signal after each R peak
RHYTHM_HOP_S = 2.0
MODES = {"batched": 64, "unbatched": 1}
BAD_QUALITY = ("stream_end", "stream_restart", "failed")


@dataclass
class Step:
    """Outcome of one step (N devices, one mode)."""

    mode: str
    devices: int
    max_batch: int
    passed: bool = False
    reasons: list[str] = field(default_factory=list)
    beats: int = 0
    beats_per_s: float = 0.0
    rhythm: int = 0
    rhythm_min_per_device: int = 0
    rhythm_expected: int = 0
    devices_with_beats: int = 0
    bad_quality: dict[str, int] = field(default_factory=dict)
    proc_ms: dict[str, float] | None = None
    e2e_ms: dict[str, float] | None = None
    r_to_msg_s: dict[str, float] | None = None
    rhythm_proc_ms: dict[str, float] | None = None
    rhythm_e2e_ms: dict[str, float] | None = None
    queue_depth_max: int = 0
    queue_depth_last: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    publish_dropped: int = 0
    engines: dict[str, dict] = field(default_factory=dict)
    sim: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    cpu_pct: dict[str, float] = field(default_factory=dict)
    loadavg: list[float] = field(default_factory=list)
    thread_cpu_s: dict[int, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    wall_s: float = 0.0


def pct(values: list[float] | np.ndarray) -> dict[str, float] | None:
    a = np.asarray(values, dtype=float)
    if not a.size:
        return None
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 2), "p95": round(float(p95), 2), "p99": round(float(p99), 2),
            "max": round(float(a.max()), 2), "n": int(a.size)}


class Listener:
    """The light subscriber: raw (receipt wall time, topic, payload) tuples, parsed after the step."""

    def __init__(self, settings: MqttSettings):
        self.items: list[tuple[float, str, bytes]] = []
        self.clock: list[tuple[float, float]] = []  # device 0: (arrival wall, chunk end device time)
        self._cut = False  # set before the edge is stopped: its shutdown flush is not real-time traffic
        self._subscribed = threading.Event()
        self._sample_topic = proto.samples_topic(f"{DEVICE_PREFIX}-000")
        topics = [proto.output_subscription("beats"), proto.output_subscription("rhythm"),
                  proto.health_topic(NODE), proto.node_errors_topic(NODE), self._sample_topic]
        self.client = make_client(settings, "bench-listener")
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.broker.host, settings.broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("bench listener could not subscribe")

    def cut(self) -> None:
        """Stop recording: what the edge publishes from now on (its SIGTERM flush: the last rhythm window of every
        run, seconds after the replay ended) is not measured."""
        self._cut = True

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        if self._cut:
            return
        now = time.time()
        if msg.topic == self._sample_topic:
            m = proto.decode_samples(msg.payload)
            self.clock.append((now, m.t0_s + m.n_samples / m.fs_hz))
        else:
            self.items.append((now, msg.topic, msg.payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def cpu_seconds(proc: psutil.Process | None, tree: bool = False) -> float:
    """User + system CPU time of a process (0 when it is gone); with ``tree``, plus its live descendants (the
    workers of ``run --processes N``)."""
    if proc is None:
        return 0.0
    procs = [proc]
    if tree:
        with contextlib.suppress(psutil.Error):
            procs += proc.children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def baseline_command(rev: str) -> tuple[list[str], Path]:
    """The ``beatssl-edge`` command of commit ``rev`` and the worktree to run it in (:mod:`baseline`)."""
    folder = add_worktree(rev)
    return edge_command(folder), folder


def wait_health_online(listener: Listener, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    topic = proto.health_topic(NODE)
    while time.monotonic() < deadline:
        for _, t, payload in list(listener.items):
            if t == topic and json.loads(payload).get("state") == "online":
                return True
        time.sleep(0.1)
    return False


def run_step(mode: str, n: int, args: argparse.Namespace, console: Console,
             profile_out: Path | None = None) -> Step:
    """One step. ``mode``: ``[baseline@]<batched|unbatched>[:extra edge args]``."""
    code, at, rest = mode.rpartition("@") if "@" in mode.partition(":")[0] else ("", "", mode)
    base, _, extra = rest.partition(":")
    edge_exe, edge_cwd = (args.baseline_cmd, args.baseline_dir) if at else ([str(BIN / "beatssl-edge")], ROOT)
    step = Step(mode=mode, devices=n, max_batch=MODES[base])
    duration = args.warm_s + args.measure_s
    t_wall = time.monotonic()
    logs = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    with EmbeddedBroker(prefer="mosquitto-only") as broker:
        settings = MqttSettings(broker.address)
        listener = Listener(settings)
        edge_cmd = [*edge_exe, "run", "--broker", f"127.0.0.1:{broker.port}", "--node", NODE,
                    "--max-batch", str(MODES[base]), "--log-level", "warning", *args.edge_arg, *extra.split()]
        edge_log = open(logs / "edge.log", "wb")  # noqa: SIM115 - closed below
        edge = subprocess.Popen(edge_cmd, cwd=edge_cwd, stdout=edge_log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        sim = None
        try:
            if not wait_health_online(listener, 60):
                step.reasons.append("edge did not come online")
                return step
            sim_cmd = [str(BIN / "simulator"), "replay", "wfdb", str(args.ludb), "--broker",
                       f"127.0.0.1:{broker.port}", "--devices", str(n), "--speed", "1", "--loop",
                       "--duration-s", str(duration), "--device-prefix", DEVICE_PREFIX, "--quiet",
                       "--chunk-ms", str(args.chunk_ms), "--format", args.format]
            reaped0 = children_cpu_s()
            sim = subprocess.Popen(sim_cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
            procs = {"edge": psutil.Process(edge.pid), "sim": psutil.Process(sim.pid),
                     "mosquitto": psutil.Process(broker._proc.pid), "bench": psutil.Process()}
            # CPU over the measured part only
            time.sleep(args.warm_s)
            cpu0 = {k: cpu_seconds(p, tree=k == "edge") for k, p in procs.items()}
            t0 = time.monotonic()
            profiler = None
            threads0 = thread_cpu(edge.pid) if profile_out is not None else {}
            if profile_out is not None:
                profiler = subprocess.Popen(
                    [str(BIN / "py-spy"), "record", "--pid", str(edge.pid), "--duration", str(int(args.measure_s - 3)),
                     "--rate", "100", "--format", "raw", "--threads", "--nonblocking",
                     "--output", str(profile_out)],
                    stdout=subprocess.DEVNULL, stderr=open(logs / "py-spy.log", "wb"))  # noqa: SIM115
            try:
                out, err = sim.communicate(timeout=args.measure_s + 60)
            except subprocess.TimeoutExpired:
                sim.kill()
                out, err = sim.communicate()
                step.reasons.append("simulator did not finish")
            cpu1 = {k: cpu_seconds(p, tree=k == "edge") for k, p in procs.items() if k != "sim"}
            if profile_out is not None:
                threads1 = thread_cpu(edge.pid)
                step.thread_cpu_s = {t: threads1[t] - threads0.get(t, 0.0) for t in threads1}
            sim_cpu = children_cpu_s() - reaped0  # the simulator is the only child reaped meanwhile
            elapsed = step.elapsed_s = time.monotonic() - t0
            step.loadavg = [round(x, 2) for x in os.getloadavg()]
            lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
            if lines:
                step.sim = json.loads(lines[-1])
            elif sim.returncode:
                step.reasons.append(f"simulator failed: {err.decode().strip()[-300:]}")
            time.sleep(args.tail_s)  # the last beats need 1.6 s of signal + processing
            if profiler is not None:
                profiler.wait(timeout=60)
            step.cpu_s = {k: round(cpu1[k] - cpu0[k], 2) for k in ("edge", "mosquitto", "bench")}
            step.cpu_s["sim"] = round(sim_cpu * args.measure_s / duration, 2)  # its whole run, scaled to the part
            step.cpu_pct = {k: round(100 * v / elapsed, 1) for k, v in step.cpu_s.items()}
        finally:
            listener.cut()
            terminate(edge)
            edge_log.close()
            if sim is not None and sim.poll() is None:
                sim.kill()
                sim.wait()
            listener.close()
    analyse(step, listener, args)
    step.wall_s = round(time.monotonic() - t_wall, 1)
    if step.reasons and (logs / "edge.log").stat().st_size:
        console.print(f"[dim]edge log: {logs / 'edge.log'}[/dim]")
    return step


def children_cpu_s() -> float:
    """CPU time of this process's finished (reaped) children."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def analyse(step: Step, listener: Listener, args: argparse.Namespace) -> None:
    n = step.devices
    duration = args.warm_s + args.measure_s
    if not listener.clock:
        step.reasons.append("no samples seen from device 0")
        return
    start = min(arr - t_end for arr, t_end in listener.clock)
    chunk_s = args.chunk_ms / 1000.0
    stagger = {f"{DEVICE_PREFIX}-{i:03d}": i / n * chunk_s for i in range(n)}

    def published_at(device: str, t: float) -> float:
        """Scheduled wall time of the chunk that holds device time ``t``."""
        return start + stagger[device] + math.ceil(t / chunk_s - 1e-6) * chunk_s

    proc, e2e, r2m, rproc, re2e = [], [], [], [], []
    beats_per_dev: collections.Counter = collections.Counter()
    rhythm_per_dev: collections.Counter = collections.Counter()
    bad: collections.Counter = collections.Counter()
    health: list[dict] = []
    lo, hi_beat = args.warm_s, duration - SEG_POST_S - 0.4
    for wall, topic, payload in listener.items:
        kind = topic.rsplit("/", 1)[-1]
        msg = json.loads(payload)
        if kind == "health":
            health.append(msg)
            continue
        if kind == "errors":
            step.reasons.append(f"edge node error: {msg.get('code')}")
            continue
        device = msg.get("device")
        if device not in stagger:
            continue
        if kind == "beats":
            t = msg["time"]
            if not lo <= t <= hi_beat:
                continue
            beats_per_dev[device] += 1
            if msg.get("quality") in BAD_QUALITY:
                bad[msg["quality"]] += 1
                continue
            proc.append(msg["proc_ms"])
            e2e.append(1e3 * (wall - published_at(device, t + SEG_POST_S)))
            r2m.append(wall - published_at(device, t))
        elif kind == "rhythm":
            t = msg["t_end"]
            if not lo < t <= duration + 1e-6:
                continue
            rhythm_per_dev[device] += 1
            rproc.append(msg["proc_ms"])
            re2e.append(1e3 * (wall - published_at(device, t)))
    step.beats = sum(beats_per_dev.values())
    step.beats_per_s = round(step.beats / (hi_beat - lo), 1)
    step.devices_with_beats = len(beats_per_dev)
    step.rhythm = sum(rhythm_per_dev.values())
    step.rhythm_expected = int(round(args.measure_s / RHYTHM_HOP_S))
    step.rhythm_min_per_device = min((rhythm_per_dev.get(d, 0) for d in stagger), default=0)
    step.bad_quality = dict(bad)
    step.proc_ms, step.e2e_ms, step.r_to_msg_s = pct(proc), pct(e2e), pct(r2m)
    step.rhythm_proc_ms, step.rhythm_e2e_ms = pct(rproc), pct(re2e)
    online = [h for h in health if h.get("state") == "online"]
    if online:
        last = online[-1]
        step.queue_depth_max = max(h.get("queue_depth", 0) for h in online)
        step.queue_depth_last = last.get("queue_depth", 0)
        step.rejected = dict(last.get("rejected") or {})
        step.publish_dropped = last.get("publish_dropped", 0)
        step.engines = {task: {k: e.get(k) for k in ("batches", "windows", "rejected", "failed", "mean_batch",
                                                      "infer_s")}
                        for task, e in (last.get("engines") or {}).items()}
    # verdict
    r = step.reasons
    if step.devices_with_beats < n:
        r.append(f"{n - step.devices_with_beats} devices without beats")
    if step.rhythm_min_per_device < step.rhythm_expected - 1:
        r.append(f"rhythm: a device got {step.rhythm_min_per_device} of {step.rhythm_expected}")
    if bad:
        r.append(f"beats without waves: {dict(bad)}")
    if step.rejected:
        r.append(f"edge rejected {step.rejected}")
    if step.publish_dropped:
        r.append(f"edge dropped {step.publish_dropped} publications")
    if any((e.get("rejected") or 0) or (e.get("failed") or 0) for e in step.engines.values()):
        r.append("scheduler rejected/failed windows")
    # the queue in seconds of input: chunks waiting / chunks arriving per second (N devices, one per chunk_ms each)
    backlog_s = step.queue_depth_max * args.chunk_ms / 1000.0 / n
    if backlog_s > args.p99_ms / 1000.0:
        r.append(f"queue depth {step.queue_depth_max} = {backlog_s:.2f} s of input > {args.p99_ms:g} ms")
    if step.sim.get("max_lag_s", 0) > 0.5:
        r.append(f"simulator lagged {step.sim['max_lag_s']:.2f} s")
    if step.proc_ms is None or step.proc_ms["p99"] > args.p99_ms:
        r.append(f"proc p99 {step.proc_ms and step.proc_ms['p99']} ms")
    if step.e2e_ms is None or step.e2e_ms["p99"] > args.p99_ms:
        r.append(f"e2e p99 {step.e2e_ms and step.e2e_ms['p99']} ms")
    if step.rhythm_e2e_ms is None or step.rhythm_e2e_ms["p99"] > 1e3 * args.rhythm_p99_s:
        r.append(f"rhythm p99 {step.rhythm_e2e_ms and step.rhythm_e2e_ms['p99']} ms > one hop (backlog)")
    step.passed = not r


# ---------------------------------------------------------------------------------------------- profile
#: (stage, regex on one py-spy frame "function (file:line)"); a sample goes to the first stage matched walking from
#: the leaf frame towards the thread's root (numpy / stdlib helpers match nothing and are charged to their caller).
STAGES = [
    ("waiting (queue get / select)", r"^Condition\.wait |^Client\._loop \(paho/mqtt/client\.py:1667\)"),
    ("ONNX Runtime session.run", r"onnxruntime"),
    ("engine normalise (z-score)", r"normalise"),
    ("scheduler: stack batch / deliver", r"inference/batching\.py"),
    ("decode samples", r"decode\w* \(edge/protocol/payloads\.py|json/decoder"),
    ("pacing spikes", r"detection/pacing\.py"),
    ("resample to 250 Hz", r"dsp/resample\.py"),
    ("filters", r"dsp/filters\.py"),
    ("QRS detector", r"detection/qrs\.py|detection/beats\.py"),
    ("delineate beat (argmax, runs)", r"interpret/delineation\.py"),
    ("beat class (features, noise gate)", r"interpret/beat_|interpret/rr_features\.py"),
    ("episodes, rhythm, alarms", r"interpret/|pipeline/interpretation\.py"),
    ("window cut / signal buffer", r"pipeline/device_inference\.py"),
    ("signal quality (std per lead)", r"_update_quality"),
    ("JSON encode outputs", r"json/encoder|dumps"),
    ("paho on_message (enqueue)", r"_on_message"),
    ("paho publish / network I/O", r"paho"),
    ("queue put / locks", r"queue\.py|threading\.py"),
]


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of every OS thread of a process, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def summarise_profile(path: Path, cpu_by_tid: dict[int, float], elapsed_s: float) -> dict:
    """Where the edge's CPU goes: measured CPU per OS thread (/proc), split over stages by py-spy samples.

    Python threads are named from py-spy's output; threads without Python frames are ONNX Runtime's intra-op pool
    (native). Stage shares come from the py-spy samples of each thread, the waiting samples left out, and are
    scaled to that thread's measured CPU time, so the result is in cores (CPU s per wall s).
    """
    compiled = [(name, re.compile(rx)) for name, rx in STAGES]
    names: dict[int, str] = {}
    samples: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        m = re.match(r"thread \((\d+)\): ([^;]*)", stack)
        if not m:
            continue
        tid, name = int(m.group(1)), m.group(2).strip()
        names[tid] = "paho network loop" if name.startswith("paho-mqtt-client") else name
        stage = "other"
        for frame in reversed(stack.split(";")[1:]):
            stage = next((n for n, rx in compiled if rx.search(frame)), None)
            if stage:
                break
        samples[tid][stage or "other"] += int(count)
    cores_by_thread: dict[str, float] = collections.Counter()
    cores_by_stage: dict[str, float] = collections.Counter()
    for tid, cpu in cpu_by_tid.items():
        cores = cpu / elapsed_s
        name = names.get(tid, "native threads (ONNX Runtime intra-op pool)")
        cores_by_thread[name] += cores
        busy = {k: v for k, v in samples.get(tid, {}).items() if not k.startswith("waiting")}
        if not busy:
            cores_by_stage["ONNX Runtime session.run" if tid not in names else "other"] += cores
            continue
        total = sum(busy.values())
        for stage, v in busy.items():
            cores_by_stage[stage] += cores * v / total

    def rounded(c: dict[str, float]) -> dict[str, float]:
        return {k: round(v, 3) for k, v in sorted(c.items(), key=lambda kv: -kv[1]) if v >= 0.0005}

    return {"cores_total": round(sum(cores_by_thread.values()), 3), "cores_by_thread": rounded(cores_by_thread),
            "cores_by_stage": rounded(cores_by_stage),
            "py_spy_samples_by_thread": {names.get(t, str(t)): dict(c.most_common()) for t, c in samples.items()}}


# ---------------------------------------------------------------------------------------------- report
def fmt_p(p: dict | None, key: str = "p99", scale: float = 1.0) -> str:
    return "-" if p is None else f"{p[key] * scale:.0f}"


def print_profile(console: Console, profile: dict, n: int) -> None:
    table = Table(title=f"Edge CPU at {n} devices (batched): cores = CPU s per wall s; per device = ms CPU per s")
    for col in ("where", "cores", "% of edge", "ms/s per device"):
        table.add_column(col, justify="left" if col == "where" else "right")
    total = profile["cores_total"] or 1.0
    for title, part in (("thread", profile["cores_by_thread"]), ("stage", profile["cores_by_stage"])):
        for k, v in part.items():
            table.add_row(f"{title}: {k}", f"{v:.3f}", f"{100 * v / total:.1f}", f"{1e3 * v / n:.2f}")
    table.add_row("total", f"{total:.3f}", "100", f"{1e3 * total / n:.2f}")
    console.print(table)


def print_table(console: Console, steps: list[Step]) -> None:
    table = Table(title="Edge throughput: 12-lead 500 Hz devices at real time, one edge process")
    for col in ("mode", "N", "ok", "beats/s", "proc p50/p99 ms", "e2e p50/p99 ms", "R→msg p99 s",
                "rhythm p99 ms", "mean batch seg/cls", "queue max", "CPU % edge/sim/mosq", "load", "why not"):
        table.add_column(col, justify="right" if col not in ("mode", "why not") else "left")
    for s in steps:
        mb = "/".join(str(s.engines.get(t, {}).get("mean_batch", "-")) for t in ("segment", "classify"))
        cpu = "/".join(str(s.cpu_pct.get(k, "-")) for k in ("edge", "sim", "mosquitto"))
        table.add_row(s.mode, str(s.devices), "yes" if s.passed else "NO", f"{s.beats_per_s:.0f}",
                      f"{fmt_p(s.proc_ms, 'p50')}/{fmt_p(s.proc_ms)}", f"{fmt_p(s.e2e_ms, 'p50')}/{fmt_p(s.e2e_ms)}",
                      "-" if s.r_to_msg_s is None else f"{s.r_to_msg_s['p99']:.2f}",
                      fmt_p(s.rhythm_e2e_ms), mb, str(s.queue_depth_max), cpu,
                      f"{s.loadavg[0]:.1f}" if s.loadavg else "-", "; ".join(s.reasons)[:80])
    console.print(table)


def plot_scaling_steps(steps: list[Step], args: argparse.Namespace, path: Path) -> Path:
    """PNG: p99 of ``proc_ms`` and ``e2e_ms`` against N for every mode of the ladder (not the profiling run)."""
    series: dict[str, tuple[list[float], list[float], list[bool]]] = {}
    for s in steps[:len(steps) - (1 if args.profile else 0)]:
        for name, p in (("proc", s.proc_ms), ("e2e", s.e2e_ms)):
            if p is not None:
                x, y, ok = series.setdefault(f"{s.mode} {name} p99", ([], [], []))
                x.append(s.devices)
                y.append(p["p99"])
                ok.append(s.passed)
    title = (f"edge latency p99 vs 12-lead 500 Hz devices ({args.format}, {args.chunk_ms:g} ms chunks, "
             f"{os.cpu_count()} CPUs)")
    return plot_scaling(series, path, args.p99_ms, title, xlabel="devices (N)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ludb", type=Path, default=ROOT.parent / "shared" / "data" / "ludb")
    parser.add_argument("--devices", default="10,20,30,40,50,60,75,100,125,150",
                        help="comma-separated N ladder (ascending); each mode stops at its first failing N")
    parser.add_argument("--modes", default="batched,unbatched",
                        help=f"comma-separated of {', '.join(MODES)}, each optionally with extra edge arguments "
                             f"after a colon (e.g. batched:--threads=1) to compare variants in one run")
    parser.add_argument("--warm-s", type=float, default=12.0, help="device seconds before measuring")
    parser.add_argument("--measure-s", type=float, default=25.0, help="device seconds measured per step")
    parser.add_argument("--tail-s", type=float, default=3.0, help="wall seconds to wait for the last messages")
    parser.add_argument("--chunk-ms", type=float, default=40.0, help="the simulator's chunk length (its default)")
    parser.add_argument("--format", choices=("binary", "json"), default="binary",
                        help="the simulator's payload encoding (binary: int16 as a device sends; json: mV floats)")
    parser.add_argument("--p99-ms", type=float, default=500.0, help="p99 latency bound beyond the segmentation wait")
    parser.add_argument("--rhythm-p99-s", type=float, default=RHYTHM_HOP_S,
                        help="p99 bound of a rhythm message's delay after its window closed (default one hop: "
                             "beyond it the classifier is building a backlog)")
    parser.add_argument("--edge-arg", action="append", default=[],
                        help="extra argument for `beatssl-edge run` (repeat), e.g. --edge-arg=--threads=1")
    parser.add_argument("--profile", default=None, metavar="N|auto",
                        help="after the ladder, run N devices (batched) once more under py-spy and summarise where "
                             "the edge's CPU goes; auto = the largest N batched kept in real time")
    parser.add_argument("--processes", type=int, default=1,
                        help="also run every mode as `run --processes N` (N worker processes) in the same run")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also run every mode with the edge of commit REV (git worktree in a temporary folder)")
    parser.add_argument("--json", type=Path, default=None, help="write the results to this JSON file")
    args = parser.parse_args()
    args.baseline_cmd = args.baseline_dir = None
    console = Console(width=200)
    ladder = [int(x) for x in args.devices.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    if args.processes > 1:
        modes += [f"{m}{':' if ':' not in m else ' '}--processes={args.processes}" for m in modes]
    worktree = None
    if args.baseline:
        args.baseline_cmd, args.baseline_dir = baseline_command(args.baseline)
        worktree = args.baseline_dir
        modes += [f"{args.baseline}@{m}" for m in modes if "--processes" not in m]
    steps: list[Step] = []
    best: dict[str, int] = {}
    load_start = [round(x, 2) for x in os.getloadavg()]
    for mode in modes:
        best[mode] = 0
        for n in ladder:
            console.log(f"{mode}: {n} devices …")
            step = run_step(mode, n, args, console)
            steps.append(step)
            console.log(f"{mode} N={n}: {'kept' if step.passed else 'FELL BEHIND'}; proc p99 "
                        f"{fmt_p(step.proc_ms)} ms, e2e p99 {fmt_p(step.e2e_ms)} ms, cpu {step.cpu_pct}, "
                        f"load {step.loadavg} {'; '.join(step.reasons)}")
            if not step.passed:
                break
            best[mode] = n
    if worktree is not None:
        remove_worktree(worktree)
    print_table(console, steps)
    summary: dict[str, object] = {
        "largest_n_real_time": best,
        "ratios_same_run": {m: round(best[m] / best[modes[0]], 2) for m in modes[1:] if best.get(modes[0])},
        "ratio_batched_over_unbatched": (round(best["batched"] / best["unbatched"], 2)
                                         if best.get("batched") and best.get("unbatched") else None),
        "target_n": 100,
    }
    console.print(f"largest N kept in real time: {best}" + (
        f"; ratio batched/unbatched {summary['ratio_batched_over_unbatched']}"
        if summary["ratio_batched_over_unbatched"] else ""))
    profile = None
    if args.profile:
        args.profile = best.get("batched") or ladder[0] if args.profile == "auto" else int(args.profile)
        out = Path(tempfile.mkdtemp(prefix="bench-pyspy-")) / "edge.raw.txt"
        console.log(f"profiling the edge at {args.profile} devices (batched) with py-spy …")
        step = run_step("batched", args.profile, args, console, profile_out=out)
        steps.append(step)
        if out.exists():
            profile = {"devices": args.profile, "raw": str(out), "edge_cpu_pct": step.cpu_pct.get("edge"),
                       **summarise_profile(out, step.thread_cpu_s, step.elapsed_s)}
            print_profile(console, profile, args.profile)
        else:
            console.print("[yellow]py-spy wrote nothing (ptrace not permitted?)[/yellow]")
    result = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("json", "baseline_cmd", "baseline_dir")},
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load_start,
                    "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        **summary,
        "steps": [asdict(s) for s in steps],
        "profile": profile,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        png = plot_scaling_steps(steps, args, args.json.with_suffix(".png"))
        console.print(f"wrote {args.json} and {png}")


if __name__ == "__main__":
    main()
