"""Alarm delays through the live edge: cases with known events, replayed over MQTT or run offline, and scored.

Used by ``bench/alarms.py`` and ``tests/test_bench_alarms.py``. A :class:`AlarmCase` is a stretch of signal with its
reference events (alarm type, onset, end; device seconds from the case's first sample):

* MIT-BIH excerpts around annotated ``(VT`` / ``(VFL`` episodes (→ ``vt`` / ``vf``) and around stretches where
  the *reference* heart rate is beyond the alarm limits (→ ``brady`` / ``tachy``): the median of the last 8
  reference N–N intervals (both beats EC57 class N, 0.24–3 s, as the edge's rate rule) below ``brady_bpm`` or above
  ``tachy_bpm`` for at least ``min_rate_s``; onset = the beat at which it crossed (no signal resampled in time);
* synthetic gaps cut into a clean record (:func:`gap_case`): ``asystole`` = every lead replaced by a flat baseline
  (the level before the cut + 20 µV white noise + 50 µV, 0.3 Hz baseline wander), ``lead_off`` = the preferred
  lead at exactly 0 mV;
* clean stretches (no event; every alarm raised there is false).

:func:`replay` plays cases as simulated devices (:class:`simulator.replay.Replayer`, binary payloads) through a
real broker into an in-process :class:`edge.app.EdgeApp`, and stamps each ``beatssl/<dev>/alarms`` message with its
arrival (monotonic wall clock). Arrival on the device clock: ``(arrival − replay start) × speed``, the replay start
being the replayer's own (its summary's ``elapsed_s`` counted back from when :meth:`Replayer.run` returned); a chunk
of device time ``t`` is due at ``start + t / speed``, so this is the stream's device time when the message arrived
(to within the devices' stagger, < one 40 ms chunk, and the replayer's ``max_lag_s`` × speed).
:func:`run_offline` runs the same cases through :func:`edge.pipeline.runner.run_recording` (no MQTT): there arrival
is the alarm's ``at`` (the device time it was decided).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import wfdb

from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.ecg import MITDB_TO_AAMI, preferred_lead
from edge.inference import Engine
from edge.interpret.alarms import AlarmLimits
from edge.pipeline.device_inference import InferencePlan
from edge.pipeline.runner import run_recording
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, make_client
from offline.records import read_record
from offline.rhythm import rhythm_episodes
from offline.scoring import BEAT_SYMBOLS
from simulator.replay import Replayer
from simulator.sources import ReplaySource

#: Episode codes of MIT-BIH and the alarm each must raise.
EPISODE_ALARMS: dict[str, str] = {"VT": "vt", "VFL": "vf"}
#: An alarm counts for an event when it arrives within [onset − EARLY_S, end + LATE_S] (device s).
EARLY_S = 1.0
LATE_S = 5.0
#: Synthetic gap: white noise sd (mV), baseline wander amplitude (mV) and frequency (Hz).
GAP_NOISE_MV = 0.02
GAP_WANDER_MV = 0.05
GAP_WANDER_HZ = 0.3


@dataclass(frozen=True)
class RefEvent:
    """A reference event: the alarm it must raise, its onset and end (device s from the case's first sample)."""

    alarm: str
    onset_s: float
    end_s: float


@dataclass
class AlarmCase:
    """A stretch of signal with known events.

    Attributes:
        name: case id (letters, digits, ``_``; also the WFDB record name and the device id's tail).
        group: report group (``DS1``, ``DS2 (dev test)``, ``synthetic``, ``clean`` …).
        signal_mv: ``(n, L)`` samples (mV) at ``fs_hz`` (Hz); leads: their names.
        events: reference events; source: where it comes from (record and start s), for the report.
        quiet: alarm types that must not fire anywhere in the case, even inside an event (lead-off: asystole).
    """

    name: str
    group: str
    signal_mv: np.ndarray = field(repr=False)
    fs_hz: float
    leads: tuple[str, ...]
    events: list[RefEvent]
    source: str
    quiet: tuple[str, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.signal_mv.shape[0] / self.fs_hz


@dataclass(frozen=True)
class Alarm:
    """One alarm message: type, state, ``time`` (condition began), ``at`` (decided) and ``arrival_s`` (device s)."""

    type: str
    state: str
    time_s: float
    at_s: float
    arrival_s: float


# ---------------------------------------------------------------------------------------------- cases
def rate_events(samples: np.ndarray, symbols: Sequence[str], fs_hz: float, limits: AlarmLimits,
                min_s: float) -> list[RefEvent]:
    """Reference brady / tachy stretches (s): the median of the last 8 reference N–N intervals beyond the limits
    for at least ``min_s`` s (onset: the beat where it crossed, end: the beat where it came back)."""
    beats = [(int(s) / fs_hz, MITDB_TO_AAMI.get(y)) for s, y in zip(samples, symbols, strict=True)
             if y in BEAT_SYMBOLS]
    rr: list[float] = []
    out: list[RefEvent] = []
    state: tuple[str, float] | None = None
    for (t0, c0), (t1, c1) in zip(beats, beats[1:], strict=False):
        if not (c0 == "N" and c1 == "N" and 0.24 <= t1 - t0 <= 3.0):
            continue
        rr.append(t1 - t0)
        if len(rr) < 8:
            continue
        hr = 60.0 / float(np.median(rr[-8:]))
        kind = "brady" if hr < limits.brady_bpm else "tachy" if hr > limits.tachy_bpm else None
        if state is not None and kind != state[0]:
            if t1 - state[1] >= min_s:
                out.append(RefEvent(state[0], state[1], t1))
            state = None
        if kind is not None and state is None:
            state = (kind, t1)
    if state is not None and beats and beats[-1][0] - state[1] >= min_s:
        out.append(RefEvent(state[0], state[1], beats[-1][0]))
    return out


def record_events(path: Path, limits: AlarmLimits, min_rate_s: float) -> list[RefEvent]:
    """Every reference event of a MIT-BIH record (s from its start): VT / VFL episodes and rate stretches."""
    header = wfdb.rdheader(str(path))
    ann = wfdb.rdann(str(path), "atr")
    symbols = list(ann.symbol)
    episodes = rhythm_episodes(ann.sample, symbols, list(ann.aux_note), header.fs, header.sig_len / header.fs)
    events = [RefEvent(alarm, s, e) for code, alarm in EPISODE_ALARMS.items() for s, e in episodes.get(code, [])]
    events += rate_events(ann.sample, symbols, header.fs, limits, min_rate_s)
    return sorted(events, key=lambda e: e.onset_s)


def excerpt_cases(path: Path, group: str, limits: AlarmLimits, lead_in_s: float = 30.0, tail_s: float = 10.0,
                  min_rate_s: float = 5.0, alarms: Sequence[str] = ("vt", "vf", "brady", "tachy")) -> list[AlarmCase]:
    """Excerpts of a MIT-BIH record around its events of the ``alarms`` types: from ``lead_in_s`` before an onset
    to ``tail_s`` after the end, overlapping excerpts merged. Every reference event inside an excerpt is one of its
    events (those that the excerpt cuts are dropped)."""
    events = record_events(path, limits, min_rate_s)
    wanted = [e for e in events if e.alarm in alarms]
    record = read_record(path)
    windows: list[list[float]] = []
    for e in wanted:
        a, b = max(0.0, e.onset_s - lead_in_s), min(record.duration_s, e.end_s + tail_s)
        if windows and a <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], b)
        else:
            windows.append([a, b])
    cases = []
    for a, b in windows:
        inside = [RefEvent(e.alarm, e.onset_s - a, e.end_s - a) for e in events if a <= e.onset_s and e.end_s <= b]
        lo, hi = int(a * record.fs_hz), int(b * record.fs_hz)
        cases.append(AlarmCase(f"m{record.name}_{int(a)}", group, record.signal_mv[lo:hi], record.fs_hz,
                               record.leads, inside, f"mitdb {record.name} {a:.0f}-{b:.0f} s"))
    return cases


def clean_case(path: Path, group: str, start_s: float, length_s: float) -> AlarmCase:
    """A stretch of a record taken as event-free (every alarm there is false)."""
    record = read_record(path)
    lo, hi = int(start_s * record.fs_hz), int(min(record.duration_s, start_s + length_s) * record.fs_hz)
    return AlarmCase(f"c{record.name}_{int(start_s)}", group, record.signal_mv[lo:hi], record.fs_hz, record.leads,
                     [], f"{record.name} {start_s:.0f}-{hi / record.fs_hz:.0f} s")


def gap_case(path: Path, kind: str, start_s: float, length_s: float, gap_at_s: float, gap_s: float = 8.0,
             seed: int = 0) -> AlarmCase:
    """A clean stretch with an ``asystole`` (flat baseline + noise on every lead) or ``lead_off`` (preferred lead at
    0 mV) gap of ``gap_s`` s at ``gap_at_s`` s into it (s from the stretch's start)."""
    if kind not in ("asystole", "lead_off"):
        raise ValueError(f"gap kind must be asystole or lead_off, not {kind!r}")
    record = read_record(path)
    fs = record.fs_hz
    lo = int(start_s * fs)
    x = record.signal_mv[lo:lo + int(length_s * fs)].astype(np.float64).copy()
    a, b = int(gap_at_s * fs), int((gap_at_s + gap_s) * fs)
    if kind == "asystole":
        rng = np.random.default_rng(seed)
        t = np.arange(b - a) / fs
        wander = GAP_WANDER_MV * np.sin(2 * np.pi * GAP_WANDER_HZ * t)
        for k in range(x.shape[1]):
            x[a:b, k] = np.median(x[a - int(fs):a, k]) + wander + GAP_NOISE_MV * rng.standard_normal(b - a)
        quiet: tuple[str, ...] = ("lead_off",)
    else:
        x[a:b, preferred_lead(record.leads)] = 0.0
        quiet = ("asystole",)
    return AlarmCase(f"{'a' if kind == 'asystole' else 'l'}{record.name}_{int(start_s)}", "synthetic",
                     x.astype(np.float32), fs, record.leads, [RefEvent(kind, gap_at_s, gap_at_s + gap_s)],
                     f"{record.name} {start_s:.0f}+{length_s:.0f} s, {kind} {gap_s:.0f} s at {gap_at_s:.0f} s",
                     quiet)


# ---------------------------------------------------------------------------------------------- runs
class AlarmListener:
    """Subscribes to every device's alarms (QoS 1) and stamps each message with its monotonic arrival (s)."""

    def __init__(self, settings: MqttSettings, timeout_s: float = 5.0):
        self.received: list[tuple[float, str, dict]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = make_client(settings, "alarm-bench")
        self.client.on_connect = lambda c, *a: c.subscribe(proto.output_subscription("alarms"), qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.broker.host, settings.broker.port)
        self.client.loop_start()
        if not subscribed.wait(timeout_s):
            self.close()
            raise TimeoutError(f"could not subscribe on {settings.broker} within {timeout_s} s")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.monotonic()
        device = proto.device_from_topic(msg.topic)
        if device is None or msg.topic != proto.alarms_topic(device):
            return
        with self._lock:
            self.received.append((now, device, json.loads(msg.payload)))

    def take(self) -> list[tuple[float, str, dict]]:
        with self._lock:
            out, self.received = self.received, []
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _write(case: AlarmCase, folder: Path) -> ReplaySource:
    names = [lead if lead.isalnum() else f"ECG{i}" for i, lead in enumerate(case.leads)]
    wfdb.wrsamp(case.name, fs=case.fs_hz, units=["mV"] * len(names), sig_name=names,
                p_signal=case.signal_mv.astype(np.float64), fmt=["16"] * len(names), write_dir=str(folder))
    return ReplaySource(name=case.name, path=folder / case.name)


def replay(cases: Sequence[AlarmCase], engines: Sequence[Path], limits: AlarmLimits, speed: float,
           parallel: int = 4, settle_s: float = 2.0) -> tuple[dict[str, list[Alarm]], dict[str, Any]]:
    """Replay ``cases`` (``parallel`` devices at a time, at ``speed``× real time) through mosquitto into one
    EdgeApp with ``engines`` and ``limits`` on every device; the alarm messages of each case, and run facts
    (replayer lag, wall time)."""
    out: dict[str, list[Alarm]] = {c.name: [] for c in cases}
    facts: dict[str, Any] = {"max_lag_s": 0.0, "wall_s": 0.0, "dropped": 0}
    t_begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-alarms-") as tmp, \
            EmbeddedBroker(prefer="mosquitto-only") as broker:
        settings = MqttSettings(broker.address)
        listener = AlarmListener(settings)
        app = EdgeApp(EdgeConfig(mqtt=settings, node="alarms", engines=tuple(engines), alarm_limits=limits,
                                 stale_after_s=max(5.0, 30.0 / speed))).start()
        try:
            if not app.wait_connected(10):
                raise RuntimeError("the edge did not connect to the broker")
            for i in range(0, len(cases), parallel):
                batch = list(cases[i:i + parallel])
                sources = [_write(c, Path(tmp)) for c in batch]
                replayer = Replayer(sources, settings, devices=len(batch), speed=speed, fmt="binary",
                                    device_prefix="al", device_names="record")
                summary = replayer.run()
                start = time.monotonic() - summary.elapsed_s
                time.sleep(settle_s)
                facts["max_lag_s"] = max(facts["max_lag_s"], summary.max_lag_s)
                facts["dropped"] += summary.dropped
                for arrived, device, msg in listener.take():
                    name = device.removeprefix("al-")
                    if name in out:
                        out[name].append(Alarm(msg["type"], msg["state"], msg["time"], msg["at"],
                                               (arrived - start) * speed))
        finally:
            app.stop()
            listener.close()
    facts["wall_s"] = round(time.monotonic() - t_begin, 1)
    return out, facts


def run_offline(cases: Sequence[AlarmCase], engines: Mapping[str, Engine], plan: InferencePlan | None,
                limits: AlarmLimits) -> dict[str, list[Alarm]]:
    """The same cases through :func:`edge.pipeline.runner.run_recording`: arrival = the alarm's ``at``."""
    out = {}
    for c in cases:
        msgs = run_recording(c.signal_mv, c.fs_hz, c.leads, engines, plan, device=c.name, alarm_limits=limits)
        out[c.name] = [Alarm(m["type"], m["state"], m["time"], m["at"], m["at"]) for m in msgs.get("alarms", [])]
    return out


# ---------------------------------------------------------------------------------------------- scoring
@dataclass
class EventResult:
    """One reference event and the first alarm of its type that arrived for it (None: missed)."""

    case: str
    group: str
    alarm: str
    onset_s: float
    end_s: float
    delay_s: float | None = None        # arrival − onset (device s)
    time_error_s: float | None = None   # the alarm's time − onset (device s): how well it dates the onset

    def as_dict(self) -> dict[str, Any]:
        r = {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}
        return r


def score(cases: Sequence[AlarmCase], alarms: Mapping[str, list[Alarm]]) -> tuple[list[EventResult], dict]:
    """Match each reference event to the first raised alarm of its type arriving in [onset − 1 s, end + 5 s];
    every other raised alarm of a type with a reference rule (asystole, vf, vt, brady, tachy, lead_off) and every
    ``quiet`` one is false. Returns the events and, per group, the false alarms by type and the hours."""
    results: list[EventResult] = []
    false: dict[str, dict[str, Any]] = {}
    for c in cases:
        raised = [a for a in alarms.get(c.name, []) if a.state == "raised"]
        used: set[int] = set()
        for e in c.events:
            r = EventResult(c.name, c.group, e.alarm, e.onset_s, e.end_s)
            for k, a in enumerate(raised):
                if a.type == e.alarm and e.onset_s - EARLY_S <= a.arrival_s <= e.end_s + LATE_S:
                    r.delay_s, r.time_error_s = a.arrival_s - e.onset_s, a.time_s - e.onset_s
                    used.add(k)
                    break
            results.append(r)
        g = false.setdefault(c.group, {"hours": 0.0, "by_type": {}})
        g["hours"] += c.duration_s / 3600.0
        for k, a in enumerate(raised):
            if k in used:
                continue
            near = any(e.alarm == a.type and e.onset_s - EARLY_S <= a.arrival_s <= e.end_s + LATE_S
                       for e in c.events)
            if a.type in c.quiet or (a.type in ("asystole", "vf", "vt", "brady", "tachy", "lead_off") and not near):
                g["by_type"][a.type] = g["by_type"].get(a.type, 0) + 1
    return results, false


def summary(results: Sequence[EventResult]) -> dict[str, dict[str, Any]]:
    """Per group and alarm type: events, detected, missed, delay p50 / max (s), and how many within 6 / 10 s."""
    out: dict[str, dict[str, Any]] = {}
    for group in dict.fromkeys(r.group for r in results):
        for alarm in dict.fromkeys(r.alarm for r in results if r.group == group):
            rs = [r for r in results if r.group == group and r.alarm == alarm]
            d = np.array([r.delay_s for r in rs if r.delay_s is not None])
            out.setdefault(group, {})[alarm] = {
                "events": len(rs), "detected": int(d.size), "missed": len(rs) - int(d.size),
                "delay_p50_s": round(float(np.median(d)), 2) if d.size else None,
                "delay_max_s": round(float(d.max()), 2) if d.size else None,
                "within_6_s": int((d <= 6.0).sum()), "within_10_s": int((d <= 10.0).sum()),
            }
    return out
