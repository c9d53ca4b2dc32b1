"""Per-device stream state: sequence checking, stream restarts, signal quality, beat detection and inference.

:class:`DeviceStream` is pure streaming logic (no MQTT, no threads): ``ingest(msg) -> list[Output]``,
``expire() -> list[Output]``, ``take_requests()`` (windows for the engines) and ``on_result(request, output)``;
the application (:mod:`edge.app`) feeds it decoded payloads and engine outputs and publishes what comes back.
All times are seconds; ``device time`` is the device's own clock carried in each chunk's ``t0``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.detection.beats import Beat, BeatStream
from edge.inference.batching import InferenceRequest
from edge.interpret.rhythm import LabelSmoother
from edge.pipeline.device_inference import DeviceInference, InferencePlan
from edge.protocol import PROTOCOL_VERSION, SamplesMessage

#: Standard deviation below which a lead counts as flat (lead off), in mV, over the quality window.
FLAT_STD_MV = 0.005
#: Length of the signal-quality window (s of device time).
QUALITY_WINDOW_S = 2.0
#: How often the quality window is evaluated (s of device time).
QUALITY_PERIOD_S = 0.5


@dataclass(frozen=True)
class Output:
    """A message for the application to publish: ``kind`` is the topic kind (beats, status, errors)."""

    kind: str
    payload: dict[str, Any]
    retain: bool = False


@dataclass
class StreamConfig:
    """Tunables of per-device handling.

    Attributes:
        reorder_window: chunks held back waiting for a missing seq before declaring a gap.
        error_interval_s: minimum wall time between two error messages of the same code (the counter still counts).
    """

    reorder_window: int = 2
    error_interval_s: float = 1.0


@dataclass
class Counters:
    """What happened to a device's input so far (all monotonic counts)."""

    chunks: int = 0
    samples: int = 0
    beats: int = 0
    duplicates: int = 0
    reordered: int = 0
    missing_chunks: int = 0
    restarts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class DeviceStream:
    """Everything the edge knows about one device's stream.

    The stream's sample numbering starts at the first sample received (``t0_origin``); after a gap the detector
    restarts and numbering continues from the chunk's ``t0``, so a beat's ``sample`` always means
    ``round((time - t0_origin) * fs)`` on the device clock.
    """

    def __init__(self, device_id: str, config: StreamConfig | None = None, plan: InferencePlan | None = None):
        self.device_id = device_id
        self.config = config or StreamConfig()
        self.plan = plan
        self._inf: DeviceInference | None = None
        self._generation = 0
        self._requests: list[InferenceRequest] = []
        self._smoother = LabelSmoother(dict(plan.cls.thresholds)) if plan is not None and plan.cls else None
        self.counters = Counters()
        self.fs_hz: float | None = None
        self.leads: tuple[str, ...] = ()
        self.t0_origin: float = 0.0
        self.next_seq: int | None = None
        self.state = "new"
        self.leads_off: tuple[str, ...] = ()
        self.last_arrival = time.monotonic()
        self._beats: BeatStream | None = None
        self._segment_base = 0  # device sample index of the first sample of the current detector run
        self._held: dict[int, tuple[SamplesMessage, float]] = {}
        self._last_error_wall: dict[str, float] = {}
        self._recent: deque[np.ndarray] = deque()
        self._recent_len = 0
        self._since_quality = math.inf

    # ------------------------------------------------------------------ input
    def ingest(self, msg: SamplesMessage, arrival: float | None = None) -> list[Output]:
        """Take one decoded chunk (``arrival``: monotonic wall time it came in); return what to publish."""
        arrival = time.monotonic() if arrival is None else arrival
        self.last_arrival = arrival
        out: list[Output] = []
        if self.next_seq is not None and msg.seq < self.next_seq:
            self.counters.duplicates += 1
            out += self.error("duplicate_seq", f"seq {msg.seq} arrived after {self.next_seq - 1}; dropped")
            return out
        if self.next_seq is not None and msg.seq > self.next_seq:
            if msg.seq in self._held:
                self.counters.duplicates += 1
                return self.error("duplicate_seq", f"seq {msg.seq} arrived twice; dropped")
            self._held[msg.seq] = (msg, arrival)
            if len(self._held) <= self.config.reorder_window:
                return out
            first = min(self._held)
            self.counters.missing_chunks += first - self.next_seq
            out += self.error("missing_seq", f"seq {self.next_seq}..{first - 1} never arrived; detector restarted")
            out += self._restart_detector("stream_restart")
            self.next_seq = first
        else:
            if self._held:
                self.counters.reordered += 1
            self._held[msg.seq] = (msg, arrival)
        while self.next_seq is None or self.next_seq in self._held:
            seq = min(self._held) if self.next_seq is None else self.next_seq
            chunk, when = self._held.pop(seq)
            out += self._process(chunk, when)
            self.next_seq = seq + 1
        return out

    def expire(self) -> list[Output]:
        """The device went quiet: process what is held, flush the detector and report it stale."""
        out: list[Output] = []
        for seq in sorted(self._held):
            chunk, when = self._held.pop(seq)
            self.counters.missing_chunks += max(0, seq - (self.next_seq or seq))
            self.next_seq = seq
            out += self._process(chunk, when)
            self.next_seq = seq + 1
        if self._beats is not None:
            out += self._beats_out(self._beats.flush(), time.monotonic())
        out += self._restart_detector("stream_end")
        self._set_state("stale", out)
        return out

    def take_requests(self) -> list[InferenceRequest]:
        """Windows waiting to be run by the engines (the caller submits them to the schedulers)."""
        requests, self._requests = self._requests, []
        return requests

    def on_result(self, request: InferenceRequest, output: np.ndarray | None) -> list[Output]:
        """An engine's output for one of this stream's requests (``None``: the batch failed)."""
        generation, key = request.key
        if self._inf is None or generation != self._generation:
            return []  # the stream restarted meanwhile; its beats already went out without waves
        if request.kind == "seg":
            payload = self._inf.on_seg(key, output)
            return [Output("beats", payload)] if payload is not None else []
        return [Output("rhythm", self._inf.on_rhythm(key, output, request.ready_wall))]

    # ------------------------------------------------------------------ processing
    def _process(self, msg: SamplesMessage, arrival: float) -> list[Output]:
        out: list[Output] = []
        if self.fs_hz is None or msg.fs_hz != self.fs_hz or msg.leads != self.leads:
            if self.fs_hz is not None:
                what = "fs" if msg.fs_hz != self.fs_hz else "leads"
                old = self.fs_hz if what == "fs" else list(self.leads)
                new = msg.fs_hz if what == "fs" else list(msg.leads)
                out += self.error(f"{what}_changed", f"{what} changed from {old} to {new}; stream restarted")
                self.counters.restarts += 1
                out += self._restart_detector("stream_restart")
            self.fs_hz, self.leads = msg.fs_hz, msg.leads
            self.t0_origin = msg.t0_s
        base = int(round((msg.t0_s - self.t0_origin) * self.fs_hz))
        if self._beats is not None:
            expected = self._segment_base + self._beats.samples_in
            if abs(base - expected) > max(2, 0.02 * self.fs_hz):
                jump = (base - expected) / self.fs_hz
                out += self.error("time_jump", f"t0 jumped by {jump:+.3f} s; detector restarted")
                out += self._restart_detector("stream_restart")
        if self._beats is None:
            self._start_run(base)
            if self._inf is not None and self._inf.cls_problem and self._generation == 1:
                out += self.error("no_engine_for_leads", f"no rhythm labels for this stream: {self._inf.cls_problem}")
        self.counters.chunks += 1
        self.counters.samples += msg.n_samples
        resampled, beats = self._beats.push(msg.data_mv)
        out += self._beats_out(beats, arrival)
        if self._inf is not None:
            requests, rhythm = self._inf.push(resampled, arrival)
            self._requests += [self._tag(r) for r in requests]
            out += [Output("rhythm", payload) for payload in rhythm]
        self._update_quality(msg.data_mv, out)
        return out

    def _start_run(self, base: int) -> None:
        """Start a detector run (and its inference state) at device sample ``base``."""
        self._beats = BeatStream(self.fs_hz, len(self.leads))
        self._segment_base = base
        self._recent.clear()
        self._recent_len = 0
        self._since_quality = math.inf  # evaluate as soon as the first window is full
        if self.plan is not None:
            self._generation += 1
            if self._smoother is not None:
                self._smoother.reset()
            self._inf = DeviceInference(self.plan, self.device_id, self.leads,
                                        self.t0_origin + base / self.fs_hz, self._smoother,
                                        restarted=self._generation > 1)

    def _tag(self, request: InferenceRequest) -> InferenceRequest:
        request.key = (self._generation, request.key)
        return request

    def _restart_detector(self, reason: str) -> list[Output]:
        """End the current detector run; beats still waiting for their waves go out without them."""
        self._beats = None
        if self._inf is None:
            return []
        pending = self._inf.unsegmented(reason)
        self._inf = None
        return [Output("beats", payload) for payload in pending]

    def _beats_out(self, beats: list[Beat], arrival: float) -> list[Output]:
        out = []
        for beat in beats:
            payload = self._beat_payload(beat, arrival)
            if self._inf is None:
                out.append(Output("beats", payload))
                continue
            r_internal = int(round(beat.sample * self._beats.internal_fs_hz / self.fs_hz))
            ready = self._inf.add_beat(payload, r_internal, beat.rr_s)
            if ready is not None:
                out.append(Output("beats", ready))
        return out

    def _beat_payload(self, beat: Beat, arrival: float) -> dict[str, Any]:
        sample = self._segment_base + beat.sample
        t = self.t0_origin + sample / self.fs_hz
        self.counters.beats += 1
        return {
            "v": PROTOCOL_VERSION,
            "device": self.device_id,
            "sample": sample,
            "time": round(t, 4),
            "rr_s": None if beat.rr_s is None else round(beat.rr_s, 4),
            "hr_bpm": None if beat.hr_bpm is None else round(beat.hr_bpm, 2),
            "latency_s": round(beat.latency_s, 4),
            "proc_ms": round((time.monotonic() - arrival) * 1e3, 3),
        }

    def _update_quality(self, chunk_mv: np.ndarray, out: list[Output]) -> None:
        self._recent.append(chunk_mv)
        self._recent_len += len(chunk_mv)
        window = int(QUALITY_WINDOW_S * self.fs_hz)
        while self._recent_len - len(self._recent[0]) >= window:
            self._recent_len -= len(self._recent.popleft())
        if self._recent_len < window:
            if self.state == "new":
                self._set_state("online", out)
            return
        self._since_quality += len(chunk_mv)
        if self._since_quality < QUALITY_PERIOD_S * self.fs_hz:
            return
        self._since_quality = 0
        recent = np.concatenate(self._recent)
        flat = recent.std(axis=0) < FLAT_STD_MV
        leads_off = tuple(lead for lead, f in zip(self.leads, flat, strict=True) if f)
        state = "flat" if flat.all() else "online"
        if state == "flat" and self.state != "flat":
            sd_uv = FLAT_STD_MV * 1e3
            out += self.error("flat_line", f"all leads flat (< {sd_uv:.0f} µV sd over {QUALITY_WINDOW_S} s)")
        if leads_off != self.leads_off:
            self.leads_off = leads_off
            self._set_state(state, out, force=True)
        else:
            self._set_state(state, out)

    # ------------------------------------------------------------------ outputs
    def _set_state(self, state: str, out: list[Output], force: bool = False) -> None:
        if state != self.state or force:
            self.state = state
            out.append(Output("status", self.status(), retain=True))

    def status(self) -> dict[str, Any]:
        """The retained status message of this device."""
        c = self.counters
        return {
            "v": PROTOCOL_VERSION,
            "device": self.device_id,
            "state": self.state,
            "fs": self.fs_hz,
            "leads": list(self.leads),
            "leads_off": list(self.leads_off),
            "counters": {
                "chunks": c.chunks, "samples": c.samples, "beats": c.beats, "duplicates": c.duplicates,
                "reordered": c.reordered, "missing_chunks": c.missing_chunks, "restarts": c.restarts,
                "errors": dict(c.errors),
            },
        }

    def error(self, code: str, message: str) -> list[Output]:
        """Count an error; return an ``errors`` message unless one of this code went out less than a moment ago."""
        self.counters.errors[code] = self.counters.errors.get(code, 0) + 1
        now = time.monotonic()
        if now - self._last_error_wall.get(code, -1e9) < self.config.error_interval_s:
            return []
        self._last_error_wall[code] = now
        payload = {
            "v": PROTOCOL_VERSION, "device": self.device_id, "code": code, "message": message,
            "count": self.counters.errors[code], "wall_time": round(time.time(), 3),
        }
        return [Output("errors", payload)]
