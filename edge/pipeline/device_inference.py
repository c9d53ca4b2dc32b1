"""Per-device inference state: which windows to send to the engines and what to publish when results come back.

:class:`DeviceInference` is pure streaming logic owned by one ``DeviceStream``; it holds the recent
signal at the internal rate, the beats waiting for their segmentation, and the rhythm smoothing. It produces
:class:`~edge.inference.batching.InferenceRequest`s (the application batches them across devices) and turns engine
outputs into ``beats`` / ``rhythm`` payloads.

Timing: a beat's segmentation window spans ``[R - pre, R + post)`` at the internal rate (centred on R by default), so
its message goes out once ``post`` seconds of signal after the R peak have arrived (1.6 s with the shipped 800-sample
engine: the T wave is closed and the network has context on both sides), plus the batching wait
(``--max-wait-ms``). Rhythm windows (the classifier's length, 10 s) are sent every hop (2 s). Each device's hops are
shifted by a fixed phase in ``[0, hop)`` drawn from its id (:func:`rhythm_phase`): devices that started together
do not all ask for a classifier window in the same instant, so the load on the engine is even instead of one burst
per hop.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edge.ecg import LEAD_PREFERENCE, preferred_lead
from edge.inference import LeadMismatchError, Manifest, to_probabilities
from edge.inference.batching import InferenceRequest
from edge.interpret.beat_class import RecentVCalls, decide, feature_columns, gate_classes, veto_beat
from edge.interpret.beat_morphology import NEUTRAL, DominantBeat
from edge.interpret.beat_noise import span_samples, unreadable
from edge.interpret.delineation import BeatWaves, combine_leads, delineate_beat, intervals_ms
from edge.interpret.rhythm import LabelSmoother, describe_rr, window_problem
from edge.interpret.rr_features import FEATURE_NAMES, RRContext
from edge.protocol import PROTOCOL_VERSION, device_hash

#: The engine task that answers each kind of request a device makes (``InferenceRequest.kind``).
REQUEST_TASK: dict[str, str] = {"seg": "segment", "cls": "classify", "beat": "beat-classify"}


#: Leads segmented per beat by default (a second lead is what tells a T end from a U wave taken for it).
DEFAULT_SEG_LEADS = 2


def default_seg_leads(leads: tuple[str, ...]) -> tuple[int, ...]:
    """Indices of the leads segmented when none are asked for: the stream's leads in
    :data:`edge.ecg.LEAD_PREFERENCE` order, then the others in stream order, the first :data:`DEFAULT_SEG_LEADS`
    of them (II and I of a 12-lead stream, MLII and V5 / V1 of a Holter one, the one lead of a single-lead one)."""
    order = [leads.index(name) for name in LEAD_PREFERENCE if name in leads]
    order += [i for i in range(len(leads)) if i not in order]
    return tuple(order[:DEFAULT_SEG_LEADS])


def rhythm_phase(device: str, hop_samples: int) -> int:
    """Offset (samples, in ``[0, hop_samples)``) of a device's rhythm hops from the start of its run; stable per id."""
    return device_hash(device) % 1009 * hop_samples // 1009


@dataclass(frozen=True)
class InferencePlan:
    """What the edge runs on every device.

    Attributes:
        seg: segmentation engine manifest (per-lead), or None for no beat segmentation.
        cls: classification engine manifest (PTB-XL diagnostic superclasses of a 10 s window: the ``diagnosis``),
            or None for beat-based rhythm descriptions only.
        beat: beat-classification engine manifest (AAMI class of every beat from a window around its R peak on the
            preferred lead plus its RR features), or None for no beat classes.
        seg_leads: leads to segment (``("all",)`` for every lead); empty = :func:`default_seg_leads` (two leads
            where the stream has two: the T end, and so the QT, is kept only where they agree).
        seg_pre_s: how much signal before the R peak the segmentation window holds (s); None centres the window
            on the R peak (half the engine's window before it).
        rhythm_hop_s: period of rhythm messages (s of device time).
        diagnosis_every_s: the classifier runs on a hop's window only when at least this long (s of device time)
            after the last window it ran on in this run (the first usable window always); the hops between carry
            that window's diagnosis (``diagnosis_t_end`` says which). At or below ``rhythm_hop_s``: every hop.
        rhythm_window_s: window of the rhythm description when there is no classifier (s).
        fs_hz: the internal rate (Hz) at which windows are cut; engines must take this rate.
    """

    fs_hz: float
    seg: Manifest | None = None
    cls: Manifest | None = None
    beat: Manifest | None = None
    seg_leads: tuple[str, ...] = ()
    seg_pre_s: float | None = None
    rhythm_hop_s: float = 2.0
    diagnosis_every_s: float = 10.0
    rhythm_window_s: float = 10.0

    def __post_init__(self) -> None:
        for m in (self.seg, self.cls, self.beat):
            if m is not None and m.fs_hz != self.fs_hz:
                raise ValueError(f"engine {m.name!r} takes {m.fs_hz} Hz; the edge runs at {self.fs_hz} Hz")
        if self.seg is not None and not 0.2 * self.fs_hz <= self.seg_pre <= self.seg.window_samples - 0.5 * self.fs_hz:
            raise ValueError(f"the segmentation window must hold 0.2 s before and 0.5 s after the R peak; "
                             f"{self.seg_pre} of {self.seg.window_samples} samples before it does not")
        if self.beat is not None:
            feature_columns(self.beat.feature_names)  # every feature the engine takes is one the edge computes
            before, after = DominantBeat(self.fs_hz).span
            off = self.beat.r_offset_samples or 0
            if off < before or self.beat.window_samples - off < after:
                raise ValueError(f"engine {self.beat.name!r}: its beat window must hold the morphology span "
                                 f"({before} samples before and {after} after the R peak)")

    @property
    def seg_pre(self) -> int:
        """Samples before the R peak in a segmentation window."""
        if self.seg_pre_s is None:
            return self.seg.window_samples // 2 if self.seg else 0
        return int(round(self.seg_pre_s * self.fs_hz))

    @property
    def seg_post(self) -> int:
        """Samples from the R peak to the end of a segmentation window (the wait before a beat can go out)."""
        return self.seg.window_samples - self.seg_pre if self.seg else 0

    @property
    def rhythm_window(self) -> int:
        return self.cls.window_samples if self.cls else int(round(self.rhythm_window_s * self.fs_hz))


@dataclass(eq=False)
class _Hop:
    """One rhythm hop waiting for its message: its window's key (``t_end`` s, ``rr``, ``problem``, ``carried``) and,
    once ``done``, the classifier's answer (None: none ran, or its batch failed). Hops are answered in order."""

    key: dict[str, Any]
    ready_wall: float
    done: bool = False
    logits: np.ndarray | None = None


class SignalBuffer:
    """The last ``capacity`` samples of a ``(n, L)`` stream, addressed by absolute sample index."""

    def __init__(self, capacity: int, n_leads: int):
        self._data = np.zeros((capacity, n_leads), np.float32)
        self.capacity = capacity
        self.total = 0

    def append(self, x: np.ndarray) -> None:
        n = len(x)
        if n >= self.capacity:
            self._data[:] = x[-self.capacity:]
            self.total += n
            self._data = np.roll(self._data, self.total % self.capacity, axis=0)
            return
        start = self.total % self.capacity
        first = min(n, self.capacity - start)
        self._data[start:start + first] = x[:first]
        self._data[: n - first] = x[first:]
        self.total += n

    def window(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)``; indices before the first sample repeat the first one. (stop - start, L)."""
        if stop > self.total or stop - start > self.capacity or start < self.total - self.capacity and start >= 0:
            raise IndexError(f"[{start}, {stop}) is not in the buffer (total {self.total})")
        lo = max(start, 0)
        idx = np.arange(lo, stop) % self.capacity
        out = self._data[idx]
        if start < 0:
            out = np.concatenate([np.repeat(out[:1], -start, axis=0), out])
        return out


@dataclass
class _PendingBeat:
    """A detected beat waiting for its engine results (segmentation of each lead, its class)."""

    payload: dict[str, Any]
    r: int                       # R peak, internal samples since the run start
    rr_s: float | None
    seg_wanted: bool = False     # a segmentation result is expected (False: none, or given up at a run end)
    seg_leads: int = 0           # leads segmented per beat
    seg_sent: bool = False
    results: dict[int, BeatWaves] = field(default_factory=dict)
    seg_problem: str | None = None
    cls_wanted: bool = False
    cls_sent: bool = False
    features: np.ndarray | None = None  # RR features (known one beat later)
    unreadable: bool = False  # the noise gate's decision (edge.interpret.beat_noise), taken with the class request
    morphology: np.ndarray | None = None  # against the dominant beat, taken with the class request (the V veto)
    class_probs: dict[str, float] | None = None
    cls: str | None = None
    ready_wall: float = 0.0

    @property
    def classed(self) -> bool:
        """The class is settled: given, or none will come (no classifier, or given up at a run end)."""
        return not self.cls_wanted or self.class_probs is not None

    @property
    def done(self) -> bool:
        seg_done = not self.seg_wanted or len(self.results) == self.seg_leads
        return seg_done and self.classed


class DeviceInference:
    """Inference state of one device for one detector run (a new one after each stream restart).

    Args:
        plan: engines and timing.
        device: device id.
        leads: the stream's leads (canonical names).
        t_start_s: device time of internal sample 0 of this run (s).
    """

    def __init__(self, plan: InferencePlan, device: str, leads: tuple[str, ...], t_start_s: float,
                 smoother: LabelSmoother | None, restarted: bool):
        self.plan = plan
        self.device = device
        self.leads = leads
        self.t_start_s = t_start_s
        self.fs = plan.fs_hz
        self.smoother = smoother
        self.restarted = restarted
        need = max(plan.rhythm_window, plan.seg.window_samples if plan.seg else 0,
                   plan.beat.window_samples if plan.beat else 0)
        self.buffer = SignalBuffer(need + int(4 * self.fs), len(leads))
        self.seg_lead_idx = self._seg_leads() if plan.seg else ()
        self.beat_lead_idx = preferred_lead(leads)
        #: the beat classifier's per-class thresholds (1 where the manifest has none), for
        #: :func:`edge.interpret.beat_class.decide`
        self.beat_thresholds = plan.beat.threshold_vector if plan.beat is not None else None
        self._rr = RRContext()
        self._morph = DominantBeat(self.fs)
        self._v_calls = RecentVCalls()
        self._v_index = plan.beat.class_names.index("V") if plan.beat is not None and "V" in plan.beat.class_names \
            else None
        #: the noise gate's leads (the classifier's, then the other the edge segments by default) and its span
        #: (samples before and after the R peak)
        self.gate_lead_idx = (self.beat_lead_idx, *(i for i in default_seg_leads(leads) if i != self.beat_lead_idx))
        self.gate_lead_idx = self.gate_lead_idx[:DEFAULT_SEG_LEADS]
        self.gate_span = span_samples(self.fs)
        self.beat_columns = feature_columns(plan.beat.feature_names) if plan.beat is not None else None
        self.cls_lead_idx: tuple[int, ...] | None = None
        self.cls_problem: str | None = None
        if plan.cls is not None:
            try:
                self.cls_lead_idx = plan.cls.lead_indices(leads)
            except LeadMismatchError as exc:
                self.cls_problem = str(exc)
        hop = int(round(plan.rhythm_hop_s * self.fs))
        self.next_hop = hop + rhythm_phase(device, hop)
        self._pending: deque[_PendingBeat] = deque()  # in beat order; released from the left when done
        self._unclassed: deque[_PendingBeat] = deque()  # in beat order; announced from the left once classed
        self._by_id: dict[int, _PendingBeat] = {}
        self._beat_times: deque[tuple[float, float | None]] = deque()
        self._next_id = 0
        self._rhythm_due = 0  # classifier windows submitted and not yet answered
        self._hops: deque[_Hop] = deque()  # rhythm hops not yet published, in order
        self._diag_sent_s: float | None = None  # t_end (s) of the last window submitted to the classifier
        self._diag: dict[str, Any] | None = None  # the last classifier answer: probs, labels, t_end
        self._results_due = 0  # segmentation / beat-class windows submitted and not yet answered

    @property
    def outstanding(self) -> int:
        """Engine results still due to this run (segmentation and beat-class windows, classifier windows)."""
        return self._results_due + self._rhythm_due

    def _seg_leads(self) -> tuple[int, ...]:
        wanted = self.plan.seg_leads
        if wanted == ("all",):
            return tuple(range(len(self.leads)))
        if wanted:
            return tuple(self.leads.index(lead) for lead in wanted if lead in self.leads) or (0,)
        return default_seg_leads(self.leads)

    # ------------------------------------------------------------------ input side
    def push(self, resampled: np.ndarray, arrival: float) -> tuple[list[InferenceRequest], list[dict[str, Any]]]:
        """Append internal-rate samples; return the windows that became complete and the rhythm messages that need
        no engine (no classifier, unusable window)."""
        self.buffer.append(resampled)
        requests = self._beat_requests(arrival)
        rhythm: list[dict[str, Any]] = []
        while self.buffer.total >= self.next_hop:
            self._rhythm_hop(self.next_hop, arrival, requests, rhythm)
            self.next_hop += int(round(self.plan.rhythm_hop_s * self.fs))
        return requests, rhythm

    def _beat_requests(self, arrival: float) -> list[InferenceRequest]:
        """Segmentation and beat-class windows that are now complete."""
        requests: list[InferenceRequest] = []
        plan, total = self.plan, self.buffer.total
        for i, beat in enumerate(self._pending):
            if beat.seg_wanted and not beat.seg_sent and beat.r + plan.seg_post <= total:
                beat.seg_sent, beat.ready_wall = True, arrival
                win = self.buffer.window(beat.r - plan.seg_pre, beat.r + plan.seg_post)
                for li in self.seg_lead_idx:
                    requests.append(InferenceRequest(self.device, "seg", (beat.payload["_id"], li),
                                                     win[:, li][None, :], arrival))
                    self._results_due += 1
                nxt = self._pending[i + 1].r if i + 1 < len(self._pending) else None
                beat.payload["_next_r"] = nxt
            start = beat.r - (plan.beat.r_offset_samples if plan.beat else 0)
            if (beat.cls_wanted and not beat.cls_sent and beat.features is not None
                    and start + plan.beat.window_samples <= total and beat.r + self.gate_span[1] <= total):
                beat.cls_sent = True
                beat.ready_wall = max(beat.ready_wall, arrival)
                span = self.buffer.window(beat.r - self.gate_span[0], beat.r + self.gate_span[1])
                beat.unreadable = unreadable(span[:, self.gate_lead_idx],
                                             float(beat.features[FEATURE_NAMES.index("local_rr_s")]), self.fs)
                win = self.buffer.window(start, start + plan.beat.window_samples)[:, self.beat_lead_idx]
                requests.append(InferenceRequest(self.device, "beat", beat.payload["_id"], win[None, :], arrival,
                                                 features=self._beat_features(beat, win)))
                self._results_due += 1
        return requests

    def _beat_features(self, beat: _PendingBeat, window: np.ndarray) -> np.ndarray:
        """The engine's feature vector of one beat, from its RR context and its morphology against the dominant beat
        (learnt here, once per beat, in beat order; a beat too close to the run start to hold the span gets
        :data:`edge.interpret.beat_morphology.NEUTRAL`, as in training)."""
        before, after = self._morph.span
        off = self.plan.beat.r_offset_samples or 0
        beat.morphology = self._morph.push(window[off - before : off + after]) if beat.r >= before else NEUTRAL
        return np.concatenate([beat.features, beat.morphology])[self.beat_columns].astype(np.float32)

    def flush(self, arrival: float) -> tuple[list[InferenceRequest], list[dict[str, Any]]]:
        """The run ended: the last beat's RR features (its post-RR taken equal to its pre-RR), the windows the
        resampler's tail completed, and one last rhythm window ending at the run's last sample when the run is at
        least a window long and its last hop ended earlier (a 10 s record is classified once, at its end, whatever
        the hop phase)."""
        if self.plan.beat is not None:
            last = self._rr.flush()
            if last is not None and self._pending:
                self._pending[-1].features = last
        requests = self._beat_requests(arrival)
        rhythm: list[dict[str, Any]] = []
        last_hop = self.next_hop - int(round(self.plan.rhythm_hop_s * self.fs))
        if self.buffer.total >= self.plan.rhythm_window and self.buffer.total > last_hop:
            self._rhythm_hop(self.buffer.total, arrival, requests, rhythm)
        return requests, rhythm

    def _rhythm_hop(self, end: int, arrival: float, requests: list[InferenceRequest],
                    rhythm: list[dict[str, Any]]) -> None:
        """The rhythm window ending at internal sample ``end``: a request for the classifier when one is due
        (:attr:`InferencePlan.diagnosis_every_s`); its message goes out once it and the hops before it are answered
        (at once when none is outstanding)."""
        key, window = self._rhythm_window(end)
        every = self.plan.diagnosis_every_s
        if window is not None and self._diag_sent_s is not None and every > self.plan.rhythm_hop_s and \
                key["t_end"] - self._diag_sent_s < every - 1e-6:
            key["carried"] = True  # not due: this hop carries the last window's diagnosis
            window = None
        hop = _Hop(key, arrival, done=window is None)
        self._hops.append(hop)
        if window is not None:
            self._diag_sent_s = key["t_end"]
            requests.append(InferenceRequest(self.device, "cls", hop, window, arrival))
            self._rhythm_due += 1
        rhythm += self._release_hops()

    def _release_hops(self) -> list[dict[str, Any]]:
        """The rhythm messages of the answered hops at the head of the queue, in hop order (a hop without a
        classifier window waits for the windows before it, so it carries the latest answer)."""
        out = []
        while self._hops and self._hops[0].done:
            hop = self._hops.popleft()
            out.append(self.on_rhythm(hop.key, hop.logits, hop.ready_wall))
        return out

    def add_beat(self, payload: dict[str, Any], r: int, rr_s: float | None) -> list[dict[str, Any]]:
        """A detected beat (``r``: internal sample of its R peak in this run). Returns the beat payloads ready to
        publish, in beat order: this one at once when no engine works on beats, else later, with its waves and class.
        """
        self._beat_times.append((payload["time"], rr_s))
        beat = _PendingBeat(payload, r, rr_s, seg_wanted=self.plan.seg is not None,
                            seg_leads=len(self.seg_lead_idx), cls_wanted=self.plan.beat is not None)
        if beat.cls_wanted:
            features = self._rr.push(payload["time"])
            if features is not None and self._pending:
                self._pending[-1].features = features
        payload["_id"] = self._next_id
        self._by_id[self._next_id] = beat
        self._next_id += 1
        self._pending.append(beat)
        self._unclassed.append(beat)
        return self._release()

    def classified(self) -> list[dict[str, Any]]:
        """The beats whose class became settled since the last call, in beat order (a beat waits for the ones
        before it), as ``time`` (s), ``rr_s`` (s), ``class`` and ``class_probs``: what the class detectors of the
        episode layer need, about a segmentation window earlier than the finished beat (docs/alarms.md)."""
        out = []
        while self._unclassed and self._unclassed[0].classed:
            beat = self._unclassed.popleft()
            out.append({"time": beat.payload["time"], "rr_s": beat.payload["rr_s"], "class": beat.cls,
                        "class_probs": beat.class_probs or None})
        return out

    def _release(self) -> list[dict[str, Any]]:
        """The finished beats at the head of the queue, as payloads (beats go out in order)."""
        out = []
        while self._pending and self._pending[0].done:
            beat = self._pending.popleft()
            del self._by_id[beat.payload["_id"]]
            out.append(self._finish(beat))
        return out

    def _rhythm_window(self, end: int) -> tuple[dict[str, Any], np.ndarray | None]:
        """The key of the hop ending at internal sample ``end`` and the classifier window (None: nothing to run)."""
        t_end = self.t_start_s + end / self.fs
        window_n = self.plan.rhythm_window
        while self._beat_times and self._beat_times[0][0] < t_end - window_n / self.fs:
            self._beat_times.popleft()
        rr = np.array([rr for t, rr in self._beat_times if rr is not None and t <= t_end], dtype=float)
        n_beats = sum(1 for t, _ in self._beat_times if t <= t_end)
        key = {"t_end": t_end, "rr": rr}
        if end < window_n:
            key["problem"] = "gap" if self.restarted else "warming_up"
        else:
            window = self.buffer.window(end - window_n, end)
            key["problem"] = window_problem(window, self.fs, n_beats, restarted=False)
            if key["problem"] is None and self.cls_lead_idx is not None:
                return key, np.ascontiguousarray(window[:, list(self.cls_lead_idx)].T)
        return key, None

    # ------------------------------------------------------------------ result side
    def on_seg(self, key: tuple[int, int], logits: np.ndarray | None) -> list[dict[str, Any]]:
        """A segmentation result for one lead of one beat; returns the beat payloads now ready, in order."""
        beat_id, lead = key
        self._results_due -= 1
        beat = self._by_id.get(beat_id)
        if beat is None:
            return []
        if logits is not None:
            next_r = beat.payload.get("_next_r")
            beat.results[lead] = delineate_beat(np.argmax(logits, axis=0), self.plan.seg_pre, self.fs,
                                                None if next_r is None else next_r - beat.r + self.plan.seg_pre)
        else:
            beat.results[lead] = BeatWaves(None, None, None)
            beat.seg_problem = "failed"
        return self._release()

    def on_beat(self, beat_id: int, logits: np.ndarray | None) -> list[dict[str, Any]]:
        """A beat-class result (``None``: its batch failed); returns the beat payloads now ready, in order."""
        self._results_due -= 1
        beat = self._by_id.get(beat_id)
        if beat is None:
            return []
        manifest = self.plan.beat
        if logits is None:
            beat.class_probs = {}
        else:
            p = to_probabilities(logits[None, :], manifest.activation)[0]
            beat.class_probs = {name: round(float(v), 4) for name, v in zip(manifest.class_names, p, strict=True)}
            k = int(decide(p[None, :], self.beat_thresholds)[0])
            if self._v_index is not None:
                k = veto_beat(k, p, self.beat_thresholds, beat.morphology, self._v_calls.push(k == self._v_index),
                              self._v_index)
            k = gate_classes(np.array([k]), np.array([beat.unreadable]), manifest.class_names)
            beat.cls = manifest.class_names[int(k[0])]
        return self._release()

    def _finish(self, beat: _PendingBeat) -> dict[str, Any]:
        payload = dict(beat.payload)
        del payload["_id"]
        payload.pop("_next_r", None)
        if self.plan.seg is not None:
            seg_done = len(beat.results) == len(self.seg_lead_idx)
            waves = combine_leads([beat.results[li] for li in self.seg_lead_idx], self.fs) if seg_done else \
                BeatWaves(None, None, None)
            offset = beat.r - self.plan.seg_pre

            def span(pair: tuple[int, int] | None) -> dict[str, float] | None:
                if pair is None:
                    return None
                on = self.t_start_s + (offset + pair[0]) / self.fs
                off = self.t_start_s + (offset + pair[1] + 1) / self.fs
                return {"on": round(on, 4), "off": round(off, 4)}

            payload["waves"] = {"P": span(waves.p), "QRS": span(waves.qrs), "T": span(waves.t)}
            payload["intervals_ms"] = intervals_ms(waves, self.fs, beat.rr_s)
            payload["quality"] = beat.seg_problem or waves.quality
            payload["segmented_leads"] = [self.leads[i] for i in self.seg_lead_idx] if seg_done else []
        if self.plan.beat is not None:
            payload["class"] = beat.cls
            payload["class_probs"] = beat.class_probs or None
        if beat.ready_wall:
            payload["proc_ms"] = round((time.monotonic() - beat.ready_wall) * 1e3, 3)
        return payload

    def unsegmented(self, reason: str) -> list[dict[str, Any]]:
        """The run ended: every window that can no longer fill is given up (segmentation ``quality = reason``, class
        None); returns the beat payloads now ready. Windows already sent to an engine still get their results."""
        for beat in self._pending:
            if beat.seg_wanted and not beat.seg_sent:
                beat.seg_wanted, beat.seg_problem = False, reason
            if beat.cls_wanted and not beat.cls_sent:
                beat.cls_wanted = False
        return self._release()

    def rhythm_result(self, hop: _Hop, logits: np.ndarray | None, ready_wall: float) -> list[dict[str, Any]]:
        """The classifier's answer (``None``: its batch failed) for a window this run submitted; returns the rhythm
        messages now ready, in hop order."""
        self._rhythm_due -= 1
        hop.done, hop.logits, hop.ready_wall = True, logits, ready_wall
        return self._release_hops()

    def on_rhythm(self, key: dict[str, Any], logits: np.ndarray | None, ready_wall: float) -> dict[str, Any]:
        """The rhythm message of one hop (``logits`` None: no classifier output for this window; with
        ``key["carried"]`` the hop was not due for the classifier and carries the last answer, if any)."""
        desc = describe_rr(key["rr"])
        problem = key["problem"]
        cls = self.plan.cls
        if logits is not None and cls is not None:
            p = to_probabilities(logits[None, :], cls.activation)[0]
            probs = {name: round(float(v), 4) for name, v in zip(cls.class_names, p, strict=True)}
            labels = list(self.smoother.update(probs)) if self.smoother is not None else []
            diag = self._diag = {"probs": probs, "labels": labels, "t_end": round(key["t_end"], 3)}
        elif key.get("carried"):
            diag = self._diag
        else:
            diag = None
            if problem is None and cls is not None and self.cls_problem is None:
                problem = "inference_failed"
                self._diag = None  # a failed window leaves nothing to carry
        return {
            "v": PROTOCOL_VERSION,
            "device": self.device,
            "t_end": round(key["t_end"], 3),
            "window_s": round(self.plan.rhythm_window / self.fs, 3),
            "diagnosis_probs": diag["probs"] if diag else None,
            "diagnosis": diag["labels"] if diag else [],
            "diagnosis_t_end": diag["t_end"] if diag else None,
            "hr_bpm": desc["hr_bpm"],
            "rate": desc["rate"],
            "regularity": desc["regularity"],
            "rr_sd_ms": desc["rr_sd_ms"],
            "rmssd_ms": desc["rmssd_ms"],
            "usable": problem is None,
            "reason": problem,
            "diagnosis_engine": cls.name if cls is not None and diag else None,
            "proc_ms": round((time.monotonic() - ready_wall) * 1e3, 3),
        }
