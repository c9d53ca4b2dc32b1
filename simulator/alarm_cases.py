"""Alarm delays through the live edge: cases with known events, replayed over MQTT or run offline, and scored.

Used by ``bench/alarms.py`` and ``tests/test_bench_alarms.py``. A :class:`AlarmCase` is a stretch of signal with its
reference events (alarm type, onset, end; device seconds from the case's first sample). A reference event is scored
against the alarm's **own definition** (:class:`edge.interpret.alarms.AlarmLimits`), applied to the reference
annotations; its ``status`` says how it counts (:data:`EVENT_STATUSES`):

* ``vt`` — an annotated ``(VT`` episode is an ``event`` when it holds a run of ≥ ``vt_run_beats`` (5) consecutive
  reference V beats whose mean rate ``60 (n − 1) / (t_n − t_1)`` exceeds ``vt_rate_bpm`` (100 bpm) — the vt alarm's
  rule on the edge's own beats; shorter or slower VT episodes are ``below`` (the alarm is not meant to fire on them;
  an alarm there is counted in their own row, neither a miss nor false);
* ``vf`` — every annotated ``(VFL`` episode is an ``event`` (the vf alarm reads the signal, not beats);
* ``asystole`` — a reference RR interval ≥ :attr:`edge.interpret.episodes.EpisodeConfig.asystole_s` (4 s) with no
  VFL episode in it (no beat for 4 s, the alarm's rule), from the last beat to the next; these make no excerpt of
  their own, they count where an excerpt holds them (MIT-BIH 232's long sinus pauses);
* ``brady`` / ``tachy`` — the reference rate as the alarm computes it: 60 / median of the last
  :data:`edge.interpret.episodes.RATE_BEATS_ALL` (8) RR intervals between reference beats of **any** class, below
  ``brady_bpm`` (40) / above ``tachy_bpm`` (150); a stretch begins at the beat where it crossed and ends where it came
  :data:`edge.interpret.alarms.RATE_HYSTERESIS_BPM` (5 bpm) back inside; an ``event`` when it lasts ≥ ``min_rate_s``
  (5 s), ``below`` when shorter;
* synthetic gaps cut into a clean record (:func:`gap_case`): ``asystole`` = every lead replaced by a flat baseline
  (the level before the cut + 20 µV white noise + 50 µV, 0.3 Hz baseline wander), ``lead_off`` = the preferred
  lead at exactly 0 mV;
* clean stretches (no event; every alarm raised there is false).

An alarm already raised before an event's onset and not cleared by then detects it with delay 0
(``active_at_onset``); its own raise is still false when it came near no reference event. A vt, brady or tachy
alarm arriving inside a VFL episode, or a vf alarm inside a VT episode, is not false but counted apart
(``in_other_event``): the right urgency under another ventricular-arrhythmia label.

Excerpts run from 30 s before each VT / VFL episode's onset and each rate ``event`` to 10 s after its end (merged);
a reference event that the excerpt's edge cuts is ``cut``: not scored, and an alarm of its type near it is not false.

:func:`replay` plays cases as simulated devices (:class:`simulator.replay.Replayer`, binary payloads) through a
real broker into an in-process :class:`edge.app.EdgeApp`, and stamps each ``beatssl/<dev>/alarms`` message with its
arrival (monotonic wall clock). The replay start is the replayer's own (its summary's ``elapsed_s`` counted back from
when :meth:`Replayer.run` returned); a chunk of device time ``t`` is due at ``start + t / speed``. The alarm's
**wall latency** is ``L = arrival − (start + at / speed)`` (s): from when the signal up to the alarm's decision time
``at`` was due to when the message reached the subscriber — the edge's queues, engines and both MQTT hops, under
the load of ``parallel`` devices at ``speed`` × real time. Its arrival as a real-time monitor would see it is
``at + L`` device s (:attr:`Alarm.arrival_s`, scored by default); the replay's own device clock,
``(arrival − start) × speed = at + L × speed`` (:attr:`Alarm.clock_arrival_s`), counts each wall second ``speed``
times and is kept as the pessimistic bound.
:func:`run_offline` runs the same cases through :func:`edge.pipeline.runner.run_recording` (no MQTT): there arrival
is the alarm's ``at`` (the device time it was decided; L = 0).
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
from edge.interpret.alarms import RATE_HYSTERESIS_BPM, AlarmLimits
from edge.interpret.episodes import RATE_BEATS_ALL, EpisodeConfig
from edge.pipeline.device_inference import InferencePlan
from edge.pipeline.runner import run_recording
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, make_client
from offline.records import read_record
from offline.rhythm import rhythm_episodes, vt_run
from offline.scoring import BEAT_SYMBOLS
from simulator.replay import Replayer
from simulator.sources import ReplaySource

#: Episode codes of MIT-BIH and the alarm each must raise.
EPISODE_ALARMS: dict[str, str] = {"VT": "vt", "VFL": "vf"}
#: How a reference event counts: ``event`` meets the alarm's definition (scored: detected, missed, delay);
#: ``below`` is a reference episode of that type that does not (its own row, never a miss, an alarm there not false);
#: ``cut`` overlaps an excerpt's edge (not scored; an alarm near it is not false).
EVENT_STATUSES: tuple[str, ...] = ("event", "below", "cut")
#: An alarm counts for an event when it arrives within [onset − EARLY_S, end + LATE_S] (device s).
EARLY_S = 1.0
LATE_S = 5.0
#: Synthetic gap: white noise sd (mV), baseline wander amplitude (mV) and frequency (Hz).
GAP_NOISE_MV = 0.02
GAP_WANDER_MV = 0.05
GAP_WANDER_HZ = 0.3


@dataclass(frozen=True)
class RefEvent:
    """A reference event: the alarm it must raise, its onset and end (device s from the case's first sample), how it
    counts (:data:`EVENT_STATUSES`) and what the reference shows (``detail``: beats and rate of a VT run …)."""

    alarm: str
    onset_s: float
    end_s: float
    status: str = "event"
    detail: str = ""


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
    """One alarm message: type, state, ``time`` (condition began) and ``at`` (decided), device s; ``latency_s``: the
    wall latency L (s) from when the signal up to ``at`` was due to the message's arrival (0 offline); ``speed``: the
    replay speed (× real time)."""

    type: str
    state: str
    time_s: float
    at_s: float
    latency_s: float = 0.0
    speed: float = 1.0

    @property
    def arrival_s(self) -> float:
        """Arrival (device s) with the wall latency counted once, as in a real-time replay: ``at + L``."""
        return self.at_s + self.latency_s

    @property
    def clock_arrival_s(self) -> float:
        """Arrival on the replay's device clock, ``at + L × speed`` (device s): each wall second counts ``speed``×."""
        return self.at_s + self.latency_s * self.speed


# ---------------------------------------------------------------------------------------------- cases
def reference_beats(samples: np.ndarray, symbols: Sequence[str], fs_hz: float) -> tuple[np.ndarray, list[str | None]]:
    """Times (s) and EC57 classes (None outside the mapping) of a record's reference beat annotations."""
    keep = [(int(s) / fs_hz, MITDB_TO_AAMI.get(y)) for s, y in zip(samples, symbols, strict=True) if y in BEAT_SYMBOLS]
    return np.array([t for t, _ in keep]), [c for _, c in keep]


def rate_events(times_s: np.ndarray, limits: AlarmLimits, min_s: float) -> list[RefEvent]:
    """Reference brady / tachy stretches (s) by the alarm's rule: 60 / median of the last RATE_BEATS_ALL RR intervals
    of reference beats of any class beyond the limit, back :data:`RATE_HYSTERESIS_BPM` inside it to end; onset: the
    beat where it crossed, end: the beat where it came back; ``event`` when ≥ ``min_s`` s long, else ``below``."""
    out: list[RefEvent] = []
    state: tuple[str, float, float] | None = None  # kind, onset, extreme rate
    n = RATE_BEATS_ALL
    for i in range(n, len(times_s)):
        hr = 60.0 / float(np.median(np.diff(times_s[i - n:i + 1])))
        t = float(times_s[i])
        if state is not None:
            kind, onset, extreme = state
            back = hr >= limits.brady_bpm + RATE_HYSTERESIS_BPM if kind == "brady" else \
                hr <= limits.tachy_bpm - RATE_HYSTERESIS_BPM
            if not back:
                state = (kind, onset, min(extreme, hr) if kind == "brady" else max(extreme, hr))
                continue
            out.append(RefEvent(kind, onset, t, "event" if t - onset >= min_s else "below",
                                f"{'min' if kind == 'brady' else 'max'} {extreme:.0f} bpm"))
            state = None
        if hr < limits.brady_bpm:
            state = ("brady", t, hr)
        elif hr > limits.tachy_bpm:
            state = ("tachy", t, hr)
    if state is not None:
        kind, onset, extreme = state
        t = float(times_s[-1])
        out.append(RefEvent(kind, onset, t, "event" if t - onset >= min_s else "below",
                            f"{'min' if kind == 'brady' else 'max'} {extreme:.0f} bpm"))
    return out


def record_events(path: Path, limits: AlarmLimits, min_rate_s: float) -> list[RefEvent]:
    """Every reference event of a MIT-BIH record (s from its start): VT / VFL episodes and rate stretches, each with
    its status against the alarm's definition (module docstring)."""
    header = wfdb.rdheader(str(path))
    ann = wfdb.rdann(str(path), "atr")
    symbols = list(ann.symbol)
    episodes = rhythm_episodes(ann.sample, symbols, list(ann.aux_note), header.fs, header.sig_len / header.fs)
    times, classes = reference_beats(ann.sample, symbols, header.fs)
    vfl = episodes.get("VFL", [])
    events = [RefEvent("vf", s, e) for s, e in vfl]
    asystole_s = EpisodeConfig().asystole_s
    for t0, t1 in zip(times[:-1], times[1:], strict=True):
        if t1 - t0 >= asystole_s and not any(s < t1 and e > t0 for s, e in vfl):
            events.append(RefEvent("asystole", float(t0), float(t1), "event", f"no beat for {t1 - t0:.1f} s"))
    for s, e in episodes.get("VT", []):
        beats, rate, met = vt_run(times, classes, s, e, limits)
        detail = f"{beats} V beats" + (f" at {rate:.0f} bpm" if rate is not None else "")
        events.append(RefEvent("vt", s, e, "event" if met is not None else "below", detail))
    events += rate_events(times, limits, min_rate_s)
    return sorted(events, key=lambda e: e.onset_s)


def excerpt_cases(path: Path, group: str, limits: AlarmLimits, lead_in_s: float = 30.0, tail_s: float = 10.0,
                  min_rate_s: float = 5.0, alarms: Sequence[str] = ("vt", "vf", "brady", "tachy")) -> list[AlarmCase]:
    """Excerpts of a MIT-BIH record around its events of the ``alarms`` types (every VT / VFL episode, rate stretches
    of status ``event``): from ``lead_in_s`` before an onset to ``tail_s`` after the end, overlapping excerpts
    merged. Every reference event inside an excerpt is one of its events; one the excerpt's edge cuts is kept,
    clipped, as ``cut``."""
    events = record_events(path, limits, min_rate_s)
    wanted = [e for e in events if e.alarm in alarms and (e.alarm in ("vt", "vf") or e.status == "event")]
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
        inside = [RefEvent(e.alarm, max(e.onset_s, a) - a, min(e.end_s, b) - a,
                           e.status if a <= e.onset_s and e.end_s <= b else "cut", e.detail)
                  for e in events if e.onset_s < b and e.end_s > a]
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
                                               arrived - start - msg["at"] / speed, speed))
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
        out[c.name] = [Alarm(m["type"], m["state"], m["time"], m["at"]) for m in msgs.get("alarms", [])]
    return out


# ---------------------------------------------------------------------------------------------- scoring
@dataclass
class EventResult:
    """One scored reference event (status ``event`` or ``below``) and the first alarm of its type that arrived for
    it (None: none came)."""

    case: str
    group: str
    alarm: str
    onset_s: float
    end_s: float
    status: str = "event"
    detail: str = ""
    delay_s: float | None = None        # arrival − onset (device s); 0 when active at onset
    active_at_onset: bool = False       # an alarm raised before the onset was still raised at it
    latency_s: float | None = None      # the alarm's wall latency L (s)
    time_error_s: float | None = None   # the alarm's time − onset (device s): how well it dates the onset

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _arrival(a: Alarm, clock: bool) -> float:
    return a.clock_arrival_s if clock else a.arrival_s


def _near(e: RefEvent, a: Alarm, clock: bool) -> bool:
    return e.alarm == a.type and e.onset_s - EARLY_S <= _arrival(a, clock) <= e.end_s + LATE_S


#: Alarms that, arriving inside a reference event of another type are counted apart, not as false: event -> types.
OTHER_EVENT: dict[str, tuple[str, ...]] = {"vf": ("vt", "brady", "tachy"), "vt": ("vf",)}


def _active_at(alarms: Sequence[Alarm], alarm: str, t_s: float, clock: bool) -> Alarm | None:
    """The raised alarm of type ``alarm`` that arrived before ``t_s − EARLY_S`` and had not cleared by ``t_s``."""
    current = None
    for a in alarms:
        if a.type != alarm or _arrival(a, clock) > t_s:
            continue
        current = a if a.state == "raised" and _arrival(a, clock) < t_s - EARLY_S else None
    return current


def score(cases: Sequence[AlarmCase], alarms: Mapping[str, list[Alarm]],
          clock: bool = False) -> tuple[list[EventResult], dict]:
    """Match each scored reference event (``event`` and ``below``) to the first raised alarm of its type arriving in
    [onset − 1 s, end + 5 s]; an alarm raised before an event and still raised at its onset detects it with delay 0.
    Every other raised alarm of a type with a reference rule (asystole, vf, vt, brady, tachy, lead_off) that is near
    no reference event of its type (``cut`` ones included), and every ``quiet`` one, is false, except those counted
    apart (:data:`OTHER_EVENT`). Arrival is :attr:`Alarm.arrival_s` (wall latency once), or
    :attr:`Alarm.clock_arrival_s` with ``clock``. Returns the events and, per group, the false alarms by type, the
    alarms counted apart, and the hours."""
    results: list[EventResult] = []
    false: dict[str, dict[str, Any]] = {}
    for c in cases:
        msgs = alarms.get(c.name, [])
        raised = [a for a in msgs if a.state == "raised"]
        used: set[int] = set()
        for e in c.events:
            if e.status == "cut":
                continue
            r = EventResult(c.name, c.group, e.alarm, e.onset_s, e.end_s, e.status, e.detail)
            before = _active_at(msgs, e.alarm, e.onset_s, clock)
            if before is not None:
                r.delay_s, r.time_error_s, r.active_at_onset = 0.0, before.time_s - e.onset_s, True
                r.latency_s = before.latency_s
            for k, a in enumerate(raised):
                if _near(e, a, clock):
                    if before is None:
                        r.delay_s, r.time_error_s = _arrival(a, clock) - e.onset_s, a.time_s - e.onset_s
                        r.latency_s = a.latency_s
                    used.add(k)
                    break
            results.append(r)
        g = false.setdefault(c.group, {"hours": 0.0, "by_type": {}, "in_other_event": {}})
        g["hours"] += c.duration_s / 3600.0
        for k, a in enumerate(raised):
            if k in used:
                continue
            near = any(_near(e, a, clock) for e in c.events)
            other = any(a.type in OTHER_EVENT.get(e.alarm, ()) and e.onset_s <= _arrival(a, clock) <= e.end_s
                        for e in c.events)
            if a.type in c.quiet or (a.type in ("asystole", "vf", "vt", "brady", "tachy", "lead_off") and not near):
                key = "in_other_event" if other and a.type not in c.quiet else "by_type"
                g[key][a.type] = g[key].get(a.type, 0) + 1
    return results, false


def summary(results: Sequence[EventResult]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per group, alarm type and status (``vt`` for the events that meet the definition, ``vt below`` for those
    below it): events, detected, missed (``below``: not alarmed), delay p50 / max (s), and how many within 6 / 10 s."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for group in dict.fromkeys(r.group for r in results):
        for row in dict.fromkeys((r.alarm, r.status) for r in results if r.group == group):
            rs = [r for r in results if r.group == group and (r.alarm, r.status) == row]
            d = np.array([r.delay_s for r in rs if r.delay_s is not None])
            out.setdefault(group, {})[row[0] if row[1] == "event" else f"{row[0]} {row[1]}"] = {
                "alarm": row[0], "status": row[1],
                "events": len(rs), "detected": int(d.size), "missed": len(rs) - int(d.size),
                "delay_p50_s": round(float(np.median(d)), 2) if d.size else None,
                "delay_max_s": round(float(d.max()), 2) if d.size else None,
                "within_6_s": int((d <= 6.0).sum()), "within_10_s": int((d <= 10.0).sum()),
            }
    return out
