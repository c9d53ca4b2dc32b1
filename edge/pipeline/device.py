"""Per-device stream state: sequence checking, stream restarts, signal quality, beat detection and inference.

:class:`DeviceStream` is pure streaming logic (no MQTT, no threads): ``push(msg) -> list[Output]``,
``flush() -> list[Output]``, ``reset()``, ``take_requests()`` (windows for the engines) and
``on_result(request, output)``;
the application (:mod:`edge.app`) feeds it decoded payloads and engine outputs and publishes what comes back.
All times are seconds; ``device time`` is the device's own clock carried in each chunk's ``t0``.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.detection.beats import Beat, BeatStream
from edge.detection.pacing import SpikeStream
from edge.ecg import preferred_lead
from edge.inference.batching import InferenceRequest
from edge.interpret.alarms import AlarmLimits
from edge.interpret.rhythm import LabelSmoother
from edge.pipeline.clock import DeviceClock
from edge.pipeline.device_inference import DeviceInference, InferencePlan
from edge.pipeline.interpretation import DeviceInterpretation
from edge.pipeline.outputs import Output
from edge.pipeline.sequence import SeqEvent, SequenceTracker
from edge.protocol import NO_RESUME, PROTOCOL_VERSION, Resume, SamplesMessage, resume_from_status

#: Standard deviation below which a lead counts as flat (lead off), in mV, over the quality window.
FLAT_STD_MV = 0.005
#: Length of the signal-quality window (s of device time).
QUALITY_WINDOW_S = 2.0
#: How often the quality window is evaluated (s of device time).
QUALITY_PERIOD_S = 0.5
#: Raw samples (s of device time) gathered before they go through the pacing-spike detector at once, unless the
#: detector emits a beat first (then they go at once, so a beat's spikes are always known when the beat goes out).
SPIKE_BLOCK_S = 0.2
#: Output kind of a beat whose class is known (its time, RR and class for the episode layer, ahead of its waves);
#: consumed by :meth:`DeviceStream._interpret`, never published.
CLASSIFIED = "classified"


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
    renumbered: int = 0
    restarts: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class DeviceStream:
    """Everything the edge knows about one device's stream: ``push(msg) -> outputs``, ``flush()``, ``reset()``.

    The stages, in order: :class:`~edge.pipeline.sequence.SequenceTracker` (order, duplicates, gaps, counter
    restarts), :class:`~edge.pipeline.clock.DeviceClock` (is ``t0`` where the sample count says?),
    :class:`~edge.detection.pacing.SpikeStream` (pacing spikes on the raw samples, before resampling smears them),
    :class:`~edge.detection.beats.BeatStream` (resample, detect) and
    :class:`~edge.pipeline.device_inference.DeviceInference` (windows for the engines, results to messages).
    A *run* is a stretch of contiguous signal; a gap, a clock jump or a change of rate or leads ends the run (its
    detector is flushed, so beats at the cut go out) and starts a new one.

    Sample numbering is on the device clock: a beat's ``sample`` is ``round(time * fs)`` where ``time`` is device
    time (s), the run's first sample being ``round(t0 * fs)``. So numbering survives edge restarts and failovers: a
    device that starts at ``t0 = 0`` gets the sample indices of its own record.

    Resumes: the status says how far the stream got (``t_last_s``) and goes out, retained, with every chunk that
    decided beats, so what an owner leaves when it dies says at least as much as its last beat. A new owner hands
    that retained status to :meth:`previous_status`; with the first sample it processed (:meth:`take_up` marks the
    start) it makes the :class:`~edge.protocol.Resume` every later status carries.
    """

    def __init__(self, device_id: str, config: StreamConfig | None = None, plan: InferencePlan | None = None,
                 alarm_limits: AlarmLimits | None = None, node: str | None = None):
        self.device_id = device_id
        self.node = node
        self.interpretation = DeviceInterpretation(device_id, alarm_limits)
        self.config = config or StreamConfig()
        self.plan = plan
        self.sequence: SequenceTracker[tuple[SamplesMessage, float]] = SequenceTracker(self.config.reorder_window)
        self.clock: DeviceClock | None = None
        self._smoother = LabelSmoother(dict(plan.cls.thresholds)) if plan is not None and plan.cls else None
        self.counters = Counters()
        self.last_arrival = time.monotonic()
        self._last_error_wall: dict[str, float] = {}
        self._generation = 0  # detector runs so far; engine results of older runs are told apart by it
        self._t_last_s: float | None = None  # device time of the last sample processed (s)
        self.resume: Resume | None = None
        #: monotonic time the last status message was made (the periodic republish skips a device with a fresh one)
        self.status_wall = -math.inf
        self.take_up()
        self.reset()

    def take_up(self) -> None:
        """This node takes the device up (again): the next sample processed is the first of a possible resume."""
        self._first_s: float | None = None  # device time of the first sample processed since (s)
        self._previous: bytes | None = None

    def previous_status(self, payload: bytes) -> list[Output]:
        """The retained status the device's previous owner left (read when this node took it up); returns the
        status stating the resume once the first sample processed here is known (at once, or with that chunk)."""
        self._previous = payload
        return self._resume()

    def _resume(self) -> list[Output]:
        if self._previous is None or self._first_s is None:
            return []
        resume = resume_from_status(self._previous, self.node, self._first_s)
        self._previous = None
        if resume is None:
            return []
        self.resume = resume
        return [self.status_output()]

    def reset(self) -> None:
        """Forget the stream (the counters stay: they count for the device's lifetime on this node)."""
        self.sequence.reset()
        self.clock = None
        self.fs_hz: float | None = None
        self.leads: tuple[str, ...] = ()
        self.state = "new"
        self.leads_off: tuple[str, ...] = ()
        self._beats: BeatStream | None = None
        self._spikes: SpikeStream | None = None
        self._spike_wait: list[np.ndarray] = []  # raw blocks not yet through the spike detector
        self._spike_wait_len = 0
        self._inf: DeviceInference | None = None
        self._ending: dict[int, DeviceInference] = {}  # ended runs whose engine results are still due
        self._requests: list[InferenceRequest] = []
        self._run_base = 0  # device sample index of the first sample of the current run
        self._recent: deque[np.ndarray] = deque()
        self._recent_len = 0
        self._since_quality = math.inf

    def __repr__(self) -> str:
        return (f"DeviceStream({self.device_id!r}, state={self.state!r}, fs_hz={self.fs_hz}, leads={self.leads}, "
                f"run_base={self._run_base}, sequence={self.sequence!r}, clock={self.clock!r}, beats={self._beats!r})")

    # ------------------------------------------------------------------ input
    def push(self, msg: SamplesMessage, arrival: float | None = None) -> list[Output]:
        """Take one decoded chunk (``arrival``: monotonic wall time it came in); return what to publish."""
        return self.push_many([(msg, time.monotonic() if arrival is None else arrival)])

    def push_many(self, chunks: Sequence[tuple[SamplesMessage, float]]) -> list[Output]:
        """Take several decoded chunks of this device, in arrival order, each with the monotonic wall time it came in;
        return what to publish.

        The outputs are those of pushing the chunks one by one, at a fraction of the cost: consecutive chunks that
        continue the run (same rate and leads, ``t0`` within the device clock's tolerance) go through the resampler,
        the detector and the windows as one block of samples, which those stages turn into the same samples and
        beats whatever the split. What says *when* differs: a beat's ``proc_ms`` counts from the arrival of the
        block's first chunk (never less than it would have been), a beat's ``latency_s`` and an episode's ``at`` are
        taken at the block's end (where the stream now is), rhythm messages carry the counts known at that point, and
        a block reports its progress on ``status`` once. A worker hands a device several chunks when its inbox held
        more than one of them (held for ``hold_ms``, or it had fallen behind: :class:`edge.app.Inbox`).
        """
        out: list[Output] = []
        block: list[tuple[SamplesMessage, float]] = []
        for msg, arrival in chunks:
            ordered, events = self.sequence.push(msg.seq, msg.t0_s, msg.t0_s + msg.n_samples / msg.fs_hz,
                                                 (msg, arrival))
            if events:  # a gap or a reboot restarts the run: what came before it is processed first
                out += self._process_block(block)
                block = []
                out += self._sequence_events(events)
            if not any(e.kind == "duplicate" for e in events):
                self.last_arrival = arrival  # a flood of duplicates must not keep a silent device alive
            block += ordered
        out += self._process_block(block)
        return self._interpret(out)

    def flush(self) -> list[Output]:
        """The device went quiet: process what is held, flush the detector (and the resampler's tail), report the
        stream stale. Engine results still due for this run are still taken (:meth:`on_result`)."""
        ordered, events = self.sequence.flush()
        out = self._sequence_events(events)
        out += self._process_block(ordered)
        out += self._end_run("stream_end")
        self.sequence.reset()
        self.clock = None
        self._set_state("stale", out)
        out = self._interpret(out)
        out += self.interpretation.flush()
        return out + self.interpretation.update_alarms()

    def acknowledge(self, alarm_type: str) -> list[Output]:
        """An operator acknowledged one of this device's alarms (ValueError: unknown type)."""
        return self.interpretation.acknowledge(alarm_type)

    def take_requests(self) -> list[InferenceRequest]:
        """Windows waiting to be run by the engines (the caller submits them to the schedulers)."""
        requests, self._requests = self._requests, []
        return requests

    def on_result(self, request: InferenceRequest, output: np.ndarray | None) -> list[Output]:
        """An engine's output for one of this stream's requests (``None``: the batch failed)."""
        generation, key = request.key
        inf = self._ending.get(generation) or (self._inf if generation == self._generation else None)
        if inf is None:
            return []
        if request.kind in ("seg", "beat"):
            ready = inf.on_seg(key, output) if request.kind == "seg" else inf.on_beat(key, output)
            out = self._classified(inf) + [Output("beats", payload) for payload in ready]
        else:
            out = [Output("rhythm", payload) for payload in inf.rhythm_result(key, output, request.ready_wall)]
        if inf is not self._inf and not inf.outstanding:
            del self._ending[generation]
        return self._interpret(out)

    @property
    def idle(self) -> bool:
        """True when no run is open and no engine result is due (the stream holds no signal)."""
        return self._beats is None and not self._ending

    # ------------------------------------------------------------------ processing
    def _interpret(self, out: list[Output]) -> list[Output]:
        """Complete beats feed the episode layer (its episode messages follow them); rhythm messages get the call,
        counts and median intervals; then the alarms are updated once."""
        done: list[Output] = []
        for o in out:
            if o.kind == CLASSIFIED:
                done += self.interpretation.beat_classified(o.payload)
                continue
            done.append(o)
            if o.kind == "beats":
                done += self.interpretation.beat_done(o.payload, classed=self.plan is not None)
            elif o.kind == "rhythm":
                o.payload.update(self.interpretation.rhythm_fields())
        return done + self.interpretation.update_alarms()

    def _sequence_events(self, events: list[SeqEvent]) -> list[Output]:
        out: list[Output] = []
        for e in events:
            if e.kind == "duplicate":
                self.counters.duplicates += 1
                out += self.error("duplicate_seq", f"seq {e.seq} arrived again; dropped")
            elif e.kind == "reordered":
                self.counters.reordered += 1
            elif e.kind == "gap":
                self.counters.missing_chunks += e.missing
                out += self.error("missing_seq", f"seq {e.seq - e.missing}..{e.seq - 1} never arrived; "
                                                 f"detector restarted")
                out += self._end_run("gap")
                self.counters.restarts += 1
            elif e.kind == "renumbered":
                self.counters.renumbered += 1
                out += self.error("seq_restart", f"seq restarted at {e.seq} while the device clock went on "
                                                 f"(device reboot?); resumed")
        return out

    def _process_block(self, chunks: Sequence[tuple[SamplesMessage, float]]) -> list[Output]:
        """Process ordered chunks, as few blocks of contiguous samples as the run allows."""
        out: list[Output] = []
        done = 0
        while done < len(chunks):
            produced, done = self._process(chunks, done)
            out += produced
        return out

    def _process(self, chunks: Sequence[tuple[SamplesMessage, float]], first: int) -> tuple[list[Output], int]:
        """Process ``chunks[first]`` and every following chunk that continues its run as one block of samples; return
        the outputs and the index of the first chunk not taken (at least ``first + 1``)."""
        msg, arrival = chunks[first]
        out: list[Output] = []
        if self.fs_hz is not None and (msg.fs_hz != self.fs_hz or msg.leads != self.leads):
            what = "fs" if msg.fs_hz != self.fs_hz else "leads"
            old = self.fs_hz if what == "fs" else list(self.leads)
            new = msg.fs_hz if what == "fs" else list(msg.leads)
            out += self.error(f"{what}_changed", f"{what} changed from {old} to {new}; stream restarted")
            self.counters.restarts += 1
            out += self._end_run("stream_restart")
        if self.clock is None or self.fs_hz != msg.fs_hz:
            self.clock = DeviceClock(msg.fs_hz)
        self.fs_hz, self.leads = msg.fs_hz, msg.leads
        jump = self.clock.push(msg.t0_s, msg.n_samples)
        if jump is not None:
            out += self.error("time_jump", f"t0 jumped by {jump:+.3f} s (tolerance {self.clock.tolerance_s:.3f} s); "
                                           f"detector restarted")
            self.counters.restarts += 1
            out += self._end_run("stream_restart")
            self.clock.reset()
            self.clock.push(msg.t0_s, msg.n_samples)
        if self._beats is None:
            out += self._start_run(int(round(msg.t0_s * self.fs_hz)))
            if self._inf is not None and self._inf.cls_problem and self._generation == 1:
                out += self.error("no_engine_for_leads", f"no rhythm labels for this stream: {self._inf.cls_problem}")
        block = [msg.data_mv]
        for i in range(first + 1, len(chunks)):
            nxt = chunks[i][0]
            if nxt.fs_hz != self.fs_hz or nxt.leads != self.leads:
                break
            if self.clock.push(nxt.t0_s, nxt.n_samples) is not None:
                break  # time jumped: the clock is left as it was, and the next call restarts the run at this chunk
            block.append(nxt.data_mv)
        data = block[0] if len(block) == 1 else np.concatenate(block)
        self.counters.chunks += len(block)
        self.counters.samples += len(data)
        self._spike_wait.append(data)
        self._spike_wait_len += len(data)
        resampled, beats = self._beats.push(data)
        if beats or self._spike_wait_len >= SPIKE_BLOCK_S * self.fs_hz:
            self._feed_spikes()
        self._t_last_s = (self._run_base + self._beats.samples_in - 1) / self.fs_hz
        out += self._advance(resampled, beats, arrival)
        n_out = len(out)
        for part in block:  # chunk by chunk, as the quality windows have always been kept
            self._update_quality(part, out)
        if self._first_s is None:
            self._first_s = self._run_base / self.fs_hz
            out += self._resume()
        elif beats and len(out) == n_out:  # no status from the quality check: say how far the beats got
            out.append(self.status_output())
        return out, first + len(block)

    def _feed_spikes(self) -> None:
        """Run the raw samples gathered since the last call through the pacing-spike detector (in one call: its
        per-call cost is paid every :data:`SPIKE_BLOCK_S` or per beat, not per chunk; the spikes are the same)."""
        if self._spike_wait_len:
            wait = self._spike_wait
            self._spikes_found(self._spikes.push(wait[0] if len(wait) == 1 else np.concatenate(wait)))
        self._spike_wait, self._spike_wait_len = [], 0

    def _spikes_found(self, samples: np.ndarray) -> None:
        """Hand the run's new pacing spikes (run sample indices) to the interpretation, as device times."""
        if len(samples):
            self.interpretation.spikes(((self._run_base + samples) / self.fs_hz).tolist())

    def _advance(self, resampled: np.ndarray, beats: list[Beat], arrival: float) -> list[Output]:
        """Hand a run's new internal-rate samples and beats on to inference; return what is ready to publish."""
        out = self._beats_out(beats, arrival)
        if len(resampled):
            out += self.interpretation.signal(resampled[:, preferred_lead(self.leads)])
        if self._inf is not None:
            requests, rhythm = self._inf.push(resampled, arrival)
            self._requests += [self._tag(r) for r in requests]
            out += [Output("rhythm", payload) for payload in rhythm]
        return out

    def _start_run(self, base: int) -> list[Output]:
        """Start a detector run (and its inference state) at device sample ``base``; returns what the previous run's
        interpretation still had to say."""
        self._beats = BeatStream(self.fs_hz, len(self.leads))
        self._spikes = SpikeStream(self.fs_hz, len(self.leads))
        self._run_base = base
        out = self.interpretation.start_run(base / self.fs_hz)
        self._recent.clear()
        self._recent_len = 0
        self._since_quality = math.inf  # evaluate as soon as the first window is full
        if self.plan is not None:
            self._generation += 1
            if self._smoother is not None:
                self._smoother.reset()
            self._inf = DeviceInference(self.plan, self.device_id, self.leads, base / self.fs_hz, self._smoother,
                                        restarted=self._generation > 1)
        return out

    def _tag(self, request: InferenceRequest) -> InferenceRequest:
        request.key = (self._generation, request.key)
        return request

    def _end_run(self, reason: str) -> list[Output]:
        """End the current run: flush its detector (beats at the cut go out, the resampler's tail completes the last
        windows); beats that can no longer be segmented go out without waves (``quality = reason``)."""
        if self._beats is None:
            return []
        self._feed_spikes()
        self._spikes_found(self._spikes.flush())
        out = self._advance(*self._beats.flush(), time.monotonic())
        self._beats = self._spikes = None
        self._recent.clear()
        self._recent_len = 0
        inf, self._inf = self._inf, None
        if inf is not None:
            requests, rhythm = inf.flush(time.monotonic())
            self._requests += [self._tag(r) for r in requests]
            out += [Output("rhythm", payload) for payload in rhythm]
            ready = inf.unsegmented(reason)
            out += self._classified(inf) + [Output("beats", payload) for payload in ready]
            if inf.outstanding:
                self._ending[self._generation] = inf
        return out

    def _beats_out(self, beats: list[Beat], arrival: float) -> list[Output]:
        out = []
        for beat in beats:
            payload = self._beat_payload(beat, arrival)
            out += self.interpretation.beat_detected(payload["time"])
            if self._inf is None:
                out.append(Output("beats", payload))
                continue
            r_internal = int(round(beat.sample * self._beats.internal_fs_hz / self.fs_hz))
            ready = self._inf.add_beat(payload, r_internal, beat.rr_s)
            out += self._classified(self._inf) + [Output("beats", payload) for payload in ready]
        return out

    @staticmethod
    def _classified(inf: DeviceInference) -> list[Output]:
        """The run's newly classed beats, for the episode layer only (never published: :meth:`_interpret`)."""
        return [Output(CLASSIFIED, event) for event in inf.classified()]

    def _beat_payload(self, beat: Beat, arrival: float) -> dict[str, Any]:
        sample = self._run_base + beat.sample
        self.counters.beats += 1
        return {
            "v": PROTOCOL_VERSION,
            "device": self.device_id,
            "sample": sample,
            "time": round(sample / self.fs_hz, 4),
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
            out.append(self.status_output())

    def status_output(self) -> Output:
        """The retained status message, to publish now."""
        self.status_wall = time.monotonic()
        return Output("status", self.status(), retain=True)

    def status(self) -> dict[str, Any]:
        """The status message of this device (see docs/protocol.md)."""
        c = self.counters
        return {
            "v": PROTOCOL_VERSION,
            "device": self.device_id,
            "node": self.node,
            "state": self.state,
            "t_last_s": None if self._t_last_s is None else round(self._t_last_s, 4),
            **(NO_RESUME if self.resume is None else self.resume.fields()),
            "fs": self.fs_hz,
            "leads": list(self.leads),
            "leads_off": list(self.leads_off),
            "counters": {
                "chunks": c.chunks, "samples": c.samples, "beats": c.beats, "duplicates": c.duplicates,
                "reordered": c.reordered, "missing_chunks": c.missing_chunks, "renumbered": c.renumbered,
                "restarts": c.restarts,
                "errors": dict(c.errors),
            },
            "clock": None if self.clock is None else {
                "jitter_ms": round(self.clock.jitter_s * 1e3, 2), "drift_ppm": round(self.clock.drift_ppm, 1),
                "tolerance_ms": round(self.clock.tolerance_s * 1e3, 1)},
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
