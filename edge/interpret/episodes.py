"""The per-device rhythm-episode state machine: small per-condition detectors combined into one call.

:class:`EpisodeTracker` takes the beats of one device (:class:`~edge.interpret.events.BeatEvent`, in time order)
and chunks of its band-passed monitored lead at the internal rate, and emits :class:`EpisodeEvent` starts / ends and
:class:`RhythmCall` changes. Each condition has its own detector, threshold and evidence:

============  ==========================================================================================  ==========
type          rule                                                                                        input
============  ==========================================================================================  ==========
AFIB          :class:`edge.interpret.af.AFDetector` (RR irregularity + P-wave evidence; AFL not told apart) beats
VT            ≥ ``vt_min_beats`` (3) consecutive V beats at > ``vt_rate_bpm`` (75 bpm), outside VFL       classes
SVTA          ≥ ``svta_min_beats`` (3) consecutive S beats at > ``svta_rate_bpm`` (100 bpm)                classes
B / T         ≥ ``bigeminy_cycles`` N V / ``trigeminy_cycles`` N N V cycles in a row                       classes
VFL           VF filter + dominant frequency 2.5–7.5 Hz (:class:`edge.interpret.ventricular.VFDetector`)   signal
SBR / STACH   median HR of the last ``rate_beats`` (8) N–N intervals < ``brady_bpm`` (60) / > ``tachy_bpm``  beats
              (100), off again 2 bpm inside the limit
PAUSE         no beat for > ``pause_s`` (2 s)                                                              beats+clock
ASYSTOLE      no beat for ≥ ``asystole_s`` (4 s) while the signal stayed usable (never on lead-off/noise) beats+signal
PACED         ≥ ``paced_fraction`` (60 %) of the last ``paced_beats`` (16) beats paced: a pacing spike     spikes
              before R (``BeatEvent.paced``; without spike evidence: classed Q by the classifier)
NOISE         the lead is lead-off or noise (:class:`edge.interpret.signal_quality.SignalQuality`)           signal
============  ==========================================================================================  ==========

The VT episode rate limit is 75 bpm, not the clinical 100: MIT-BIH's annotators mark slower V runs as VT (205 holds
a 13-beat run at 86 bpm); at 75 bpm the VT episodes missed on DS1 (6 of 39) are runs in which the beat detector
found fewer than 3 of the V beats, and no false VT episode was called. The vt *alarm* keeps > 100 bpm
(:class:`edge.interpret.alarms.AlarmLimits`).

Outside VFL: a beat whose R time lies inside the edge's own VFL episode joins no V run and ends the one in progress
(the VT episode ends at the run's last beat), since flutter waves are called V and VFL outranks VT in the call. A
beat is judged by the VFL span at its own time, as the tracker knew it :data:`KNOWN_AFTER_S` (0.7 s) after the
beat's R, when its class can first be known (so however late the class comes; NOISE likewise): the span is
known once the VFL onset is decided (~4.5 s after its start) and stays open until its end is decided (~2 s after
it). So a run whose VT onset was decided before the VFL's still starts, and a V run right after the VFL begins at
the first V beat classed after the end is decided (207's VT at 61.8 s: 62.19 → 62.55 s, still found). On the
MIT-BIH engine outputs (only 207 has edge VFL) this removed 5 of DS1's 53 false VT episodes and no found one (VT
episode Se 97.4 → 97.4 %, +P 43.0 → 45.5 %); DS2 has no edge VFL and is unchanged.

The rhythm call is the active episode highest in :data:`CALL_PRIORITY` (``N`` when none), with ``since`` its onset.
Without classes VT, SVTA, B and T never start (PACED only from spikes); AFIB, rates, PAUSE, ASYSTOLE, VFL and NOISE
still work.
Silence is measured against the signal clock minus ``beat_latency_s`` (the beat detector decides a beat up to
~0.3 s after its R peak), so a beat still in the detector does not make a pause.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edge.ecg import INTERNAL_FS_HZ
from edge.interpret.af import AFConfig, AFDetector
from edge.interpret.beat_noise import SPAN_S
from edge.interpret.events import BeatEvent, EpisodeEvent, EpisodeState, RhythmCall
from edge.interpret.signal_quality import SignalQuality
from edge.interpret.ventricular import PatternDetector, RunDetector, VFDetector

#: A beat is judged by the NOISE / VFL spans as they were known this long (s of device time) after its R peak: the
#: signal has always reached that far when its class can be known (the noise gate's span after R,
#: :data:`edge.interpret.beat_noise.SPAN_S`), so the judgement is the same however late the engines answer.
KNOWN_AFTER_S = SPAN_S[1]

#: Rhythm call priority, highest first.
CALL_PRIORITY: tuple[str, ...] = (
    "NOISE", "ASYSTOLE", "VFL", "VT", "PAUSE", "AFIB", "SVTA", "PACED", "B", "T", "STACH", "SBR",
)
#: Beats (any class) behind the all-beat rate the extreme brady / tachy alarms use.
RATE_BEATS_ALL = 8
#: Window of the per-minute ectopic counts (s) and of the AF burden (s).
COUNT_WINDOW_S = 60.0
BURDEN_WINDOW_S = 3600.0


@dataclass(frozen=True)
class EpisodeConfig:
    """Limits of the episode detectors (defaults as in the module table)."""

    brady_bpm: float = 60.0
    tachy_bpm: float = 100.0
    rate_beats: int = 8
    pause_s: float = 2.0
    asystole_s: float = 4.0
    vt_min_beats: int = 3
    vt_rate_bpm: float = 75.0
    svta_min_beats: int = 3
    svta_rate_bpm: float = 100.0
    bigeminy_cycles: int = 3
    trigeminy_cycles: int = 3
    paced_fraction: float = 0.6
    paced_beats: int = 16
    beat_latency_s: float = 0.3
    af: AFConfig = field(default_factory=AFConfig)

    def __post_init__(self) -> None:
        if not 0 < self.brady_bpm < self.tachy_bpm:
            raise ValueError(f"need 0 < brady_bpm < tachy_bpm, got {self.brady_bpm}, {self.tachy_bpm}")
        if not 0 < self.pause_s <= self.asystole_s:
            raise ValueError(f"need 0 < pause_s <= asystole_s, got {self.pause_s}, {self.asystole_s}")
        if self.rate_beats < 1 or self.paced_beats < 1 or not 0 < self.paced_fraction <= 1:
            raise ValueError("rate_beats and paced_beats must be >= 1 and paced_fraction in (0, 1]")


class RateDetector:
    """SBR and STACH from the median HR (bpm) of the last ``beats`` N–N intervals (beats classed N or unclassed).

    Onsets and offsets are dated to the middle of the window when the call switches.
    """

    HYSTERESIS_BPM = 2.0

    def __init__(self, brady_bpm: float, tachy_bpm: float, beats: int):
        self.brady_bpm, self.tachy_bpm = float(brady_bpm), float(tachy_bpm)
        self.brady, self.tachy = EpisodeState("SBR"), EpisodeState("STACH")
        self._rr: deque[float] = deque(maxlen=int(beats))
        self._t: deque[float] = deque(maxlen=int(beats))
        self._prev_sinus = False
        self.hr_bpm: float | None = None

    def reset(self) -> None:
        self._rr.clear()
        self._t.clear()
        self._prev_sinus = False
        self.hr_bpm = None
        self.brady.reset()
        self.tachy.reset()

    def push(self, beat: BeatEvent) -> list[EpisodeEvent]:
        sinus = beat.cls in (None, "N")
        ok = sinus and self._prev_sinus and beat.rr_s is not None and 0.24 <= beat.rr_s <= 3.0
        self._prev_sinus = sinus
        if not ok:
            return []
        self._rr.append(float(beat.rr_s))  # type: ignore[arg-type]
        self._t.append(beat.time_s)
        if len(self._rr) < self._rr.maxlen:  # type: ignore[operator]
            return []
        self.hr_bpm = 60.0 / float(np.median(self._rr))
        mid, now, h = self._t[len(self._t) // 2], beat.time_s, self.HYSTERESIS_BPM
        events: list[EpisodeEvent] = []
        if self.hr_bpm < self.brady_bpm:
            events += self.brady.start(mid, now)
        elif self.hr_bpm >= self.brady_bpm + h:
            events += self.brady.end(mid, now)
        if self.hr_bpm > self.tachy_bpm:
            events += self.tachy.start(mid, now)
        elif self.hr_bpm <= self.tachy_bpm - h:
            events += self.tachy.end(mid, now)
        return events

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        return self.brady.end(end_s, end_s) + self.tachy.end(end_s, end_s)


class PacedDetector:
    """PACED while at least ``fraction`` of the last ``beats`` beats are paced; off again below half that fraction.

    A beat is paced when the edge's spike detector put a pacing spike before its R peak (``BeatEvent.paced``,
    :mod:`edge.detection.pacing`). A beat without spike evidence (``paced`` None: reference classes, tests) is paced
    when it is class Q that the classifier itself gave (Q first in ``class_probs``, or no probabilities), not a beat
    the noise gate made Q (:mod:`edge.interpret.beat_noise`: flutter waves and artefact are unreadable, not paced).
    The episode starts at the first paced beat of the window."""

    def __init__(self, fraction: float, beats: int):
        self.fraction = float(fraction)
        self._q: deque[tuple[float, bool]] = deque(maxlen=int(beats))
        self.state = EpisodeState("PACED")

    def reset(self) -> None:
        self._q.clear()
        self.state.reset()

    def push(self, beat: BeatEvent) -> list[EpisodeEvent]:
        if beat.paced is not None:
            paced = beat.paced
        elif beat.cls is None:
            return []
        else:
            probs = beat.class_probs
            paced = beat.cls == "Q" and (not probs or max(probs, key=probs.__getitem__) == "Q")
        self._q.append((beat.time_s, paced))
        if len(self._q) < self._q.maxlen:  # type: ignore[operator]
            return []
        frac = sum(q for _, q in self._q) / len(self._q)
        if frac >= self.fraction:
            first_q = next(t for t, q in self._q if q)
            return self.state.start(first_q, beat.time_s)
        if frac < self.fraction / 2:
            return self.state.end(beat.time_s, beat.time_s)
        return []

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        return self.state.end(end_s, end_s)


class EpisodeTracker:
    """All episode detectors of one device, one call, the ectopic counts and the AF burden.

    Feed beats with :meth:`push_beat` and the band-passed monitored lead with :meth:`push_signal`, both in device
    time order (a beat pushed after the signal that contains it is fine); :meth:`flush` at the end of a stream.
    :meth:`snapshot` returns the state that the alarm layer reads.
    """

    def __init__(self, config: EpisodeConfig | None = None, fs_hz: float = INTERNAL_FS_HZ):
        self.config = c = config or EpisodeConfig()
        self.fs_hz = float(fs_hz)
        self.af = AFDetector(c.af)
        self.vt = RunDetector("VT", "V", c.vt_min_beats, c.vt_rate_bpm)
        self.svta = RunDetector("SVTA", "S", c.svta_min_beats, c.svta_rate_bpm)
        self.bigeminy = PatternDetector("B", 1, c.bigeminy_cycles)
        self.trigeminy = PatternDetector("T", 2, c.trigeminy_cycles)
        self.rate = RateDetector(c.brady_bpm, c.tachy_bpm, c.rate_beats)
        self.paced = PacedDetector(c.paced_fraction, c.paced_beats)
        self.vf = VFDetector(self.fs_hz)
        self.quality = SignalQuality(self.fs_hz)
        self.pause = EpisodeState("PAUSE")
        self.asystole = EpisodeState("ASYSTOLE")
        self.noise = EpisodeState("NOISE")
        self._beat_detectors = (self.af, self.vt, self.svta, self.bigeminy, self.trigeminy, self.rate, self.paced)
        #: the detectors that read only a beat's time, RR and class, and take S and N alike: fed as soon as the class
        #: is known (:meth:`push_class`), before the beat's waves. SVTA and the S count wait for the beat to be done
        #: (:meth:`push_beat`): whether an S beat is conducted AF ("S during AF is N") is decided from the AF state
        #: after the beats before it, which the order of the engine results cannot change.
        self._class_detectors = (self.vt, self.bigeminy, self.trigeminy, self.paced)
        #: fed when the beat is done: AF and the sinus rates (the classifier's class), then SVTA (S during AF as N)
        self._wave_detectors = (self.af, self.rate)
        #: each rhythm code's on/off state (the objects live as long as the tracker; reset() keeps them)
        self._states: dict[str, EpisodeState] = {
            "NOISE": self.noise, "ASYSTOLE": self.asystole, "VFL": self.vf.state, "VT": self.vt.state,
            "PAUSE": self.pause, "AFIB": self.af.state, "SVTA": self.svta.state, "PACED": self.paced.state,
            "B": self.bigeminy.state, "T": self.trigeminy.state, "STACH": self.rate.tachy, "SBR": self.rate.brady}
        self.reset()

    def reset(self) -> None:
        for det in (*self._beat_detectors, self.vf, self.quality):
            det.reset()
        for st in (self.pause, self.asystole, self.noise):
            st.reset()
        self.now_s: float | None = None
        self.last_beat_s: float | None = None
        self.last_rr_s: float | None = None
        self._stream_start_s: float | None = None
        self._run_start_s: float | None = None  # start of the current run of contiguous signal (s)
        self._unusable_since_beat = False
        #: R times (s) of the counted V and S beats, each in time order (V counted at push_class, S at push_beat)
        self._ectopic: dict[str, deque[float]] = {"V": deque(), "S": deque()}
        self._beat_times: deque[float] = deque(maxlen=RATE_BEATS_ALL + 1)  # R times of the latest beats, any class
        #: NOISE / VFL episodes not yet behind every beat: [start_s, end_s | None, start_at_s, end_at_s | None]
        self._noise_spans: deque[list] = deque()
        self._vfl_spans: deque[list] = deque()
        self._af_spans: deque[tuple[float, float]] = deque()  # closed AF spans (s) within the burden window
        self.call = RhythmCall("N", 0.0, 0.0)

    # ------------------------------------------------------------------ inputs
    def restart_silence(self, t0_s: float) -> None:
        """A new run of contiguous signal begins at ``t0_s`` (s) after a gap: the silence behind pause and asystole
        is counted from it, not from the last beat before the gap (the gap itself is no pause)."""
        self.last_beat_s = None
        self.last_rr_s = None
        self._beat_times.clear()
        self._stream_start_s = t0_s if self._stream_start_s is None else self._stream_start_s
        self._run_start_s = t0_s

    def note_beat(self, time_s: float) -> list[EpisodeEvent | RhythmCall]:
        """The beat detector found a beat with R at ``time_s`` (s): ends asystole and pause and restarts the silence
        clock, before the beat's class and waves are known (they come with :meth:`push_beat`, which calls this
        itself for a beat not noted yet)."""
        events: list[EpisodeEvent] = []
        if self._stream_start_s is None:
            self._stream_start_s = time_s
        events += self.asystole.end(time_s, time_s)
        if self.pause.active:
            events += self.pause.end(time_s, time_s)
        elif self.last_beat_s is not None and time_s - self.last_beat_s > self.config.pause_s:
            events += self.pause.start(self.last_beat_s, time_s) + self.pause.end(time_s, time_s)
        self.last_rr_s = None if self.last_beat_s is None else time_s - self.last_beat_s
        self.last_beat_s = time_s
        self._beat_times.append(time_s)
        self._unusable_since_beat = not self.quality.usable
        self.now_s = max(self.now_s or time_s, time_s)
        return self._finish(events)

    def push_class(self, beat: BeatEvent) -> list[EpisodeEvent | RhythmCall]:
        """Feed one beat's time, RR and class as soon as the classifier has spoken (in time order, before the beat's
        waves): the V count and the class detectors that take S and N alike (VT, B, T, PACED) take it now, so a V run
        is called without waiting for the segmentation; :meth:`push_beat` with ``classed=True`` then gives the
        rest."""
        out: list[EpisodeEvent | RhythmCall] = []
        if self.last_beat_s is None or beat.time_s > self.last_beat_s:
            out += self.note_beat(beat.time_s)
        return out + self._finish(self._feed(beat, self._class_detectors, count=("V",)))

    def push_beat(self, beat: BeatEvent, classed: bool = False,
                  conducted: bool = False) -> list[EpisodeEvent | RhythmCall]:
        """Feed one beat with its class and waves (in time order); returns the episode events and rhythm-call
        change it causes. ``classed``: :meth:`push_class` already had this beat (only AF, the sinus rates, SVTA and
        the S count take it here). ``conducted``: the beat is an S beat that counts as N for SVTA and the S count
        (an S beat during AF, :data:`edge.pipeline.interpretation.ATRIAL_EPISODES`); AF and the rates keep the
        classifier's class."""
        out: list[EpisodeEvent | RhythmCall] = []
        if self.last_beat_s is None or beat.time_s > self.last_beat_s:
            out += self.note_beat(beat.time_s)
        if not classed:
            out += self._finish(self._feed(beat, self._class_detectors, count=("V",)))
        self._prune_spans(beat.time_s)
        events = self._feed(beat, self._wave_detectors, count=())
        events += self._feed(replace(beat, cls="N") if conducted else beat, (self.svta,), count=("S",))
        return out + self._finish(events)

    def _feed(self, beat: BeatEvent, detectors: tuple[Any, ...], count: tuple[str, ...]) -> list[EpisodeEvent]:
        """Feed ``beat`` to ``detectors`` (none inside a NOISE span) after counting it if its class is in ``count``."""
        if beat.cls in count:
            self._ectopic[beat.cls].append(beat.time_s)
        events: list[EpisodeEvent] = []
        if self._within(self._noise_spans, beat.time_s):
            return events
        for det in detectors:
            if det is self.vt and self._within(self._vfl_spans, beat.time_s):
                events += self.vt.flush(beat.time_s)  # a beat inside VFL breaks the run and joins none
            else:
                events += det.push(beat)
        return events

    def _prune_spans(self, time_s: float) -> None:
        """Forget the NOISE / VFL spans that ended, as known :data:`KNOWN_AFTER_S` after it, before ``time_s`` (s), the
        R time of the beat :meth:`push_beat` has now: beats come in order and :meth:`push_class` is never behind it,
        so none is asked about again. (A fixed
        count would drop spans that a lagging engine's beats still fall in, and make the episodes depend on lag.)"""
        for spans in (self._noise_spans, self._vfl_spans):
            while spans and spans[0][1] is not None and spans[0][1] <= time_s and spans[0][3] <= time_s + KNOWN_AFTER_S:
                spans.popleft()

    def push_signal(self, chunk_mv: np.ndarray, t0_s: float) -> list[EpisodeEvent | RhythmCall]:
        """Feed band-passed samples ``(n,)`` mV at ``fs_hz`` whose first sample is at device time ``t0_s`` (s)."""
        chunk = np.asarray(chunk_mv, dtype=float).ravel()
        if self._stream_start_s is None:
            self._stream_start_s = t0_s
        events: list[EpisodeEvent] = []
        for status, since, at in self.quality.push(chunk, t0_s):
            if status == "ok":
                if self._noise_spans and self._noise_spans[-1][1] is None:
                    self._noise_spans[-1][1:4:2] = [since, at]
                events += self.noise.end(since, since)
            else:
                self._unusable_since_beat = True
                events += self.asystole.end(since, since)
                if not self.noise.active:
                    self._noise_spans.append([since, None, at, None])
                events += self.noise.start(since, since)
        for ev in self.vf.push(chunk, t0_s, usable=self.quality.usable):
            if ev.kind == "start":
                self._vfl_spans.append([ev.start_s, None, ev.at_s, None])
            elif self._vfl_spans:
                self._vfl_spans[-1][1:4:2] = [ev.end_s, ev.at_s]
            events.append(ev)
        self.now_s = t0_s + chunk.size / self.fs_hz
        events += self._silence(self.now_s)
        return self._finish(events)

    def flush(self) -> list[EpisodeEvent | RhythmCall]:
        """End of stream: close every active episode at the last device time seen."""
        end = self.now_s if self.now_s is not None else 0.0
        events: list[EpisodeEvent] = []
        for det in (*self._beat_detectors, self.vf):
            events += det.flush(end)
        for st in (self.pause, self.asystole, self.noise):
            events += st.end(end, end)
        return self._finish(events)

    # ------------------------------------------------------------------ internals
    def _silence(self, now_s: float) -> list[EpisodeEvent]:
        ref = self.last_beat_s if self.last_beat_s is not None else (
            self._run_start_s if self._run_start_s is not None else self._stream_start_s)
        if ref is None:
            return []
        quiet = now_s - self.config.beat_latency_s - ref
        events: list[EpisodeEvent] = []
        if quiet > self.config.pause_s and self.last_beat_s is not None:
            events += self.pause.start(ref, now_s)
        if quiet >= self.config.asystole_s and self.quality.usable and not self._unusable_since_beat:
            events += self.asystole.start(ref, now_s)
        return events

    def _finish(self, events: list[EpisodeEvent]) -> list[EpisodeEvent | RhythmCall]:
        for ev in events:
            if ev.type == "AFIB" and ev.kind == "end":
                self._af_spans.append((ev.start_s, ev.end_s))  # type: ignore[arg-type]
        out: list[EpisodeEvent | RhythmCall] = list(events)
        rhythm, since = "N", None
        for name in CALL_PRIORITY:
            start = self._active_start(name)
            if start is not None:
                rhythm, since = name, start
                break
        if rhythm != self.call.rhythm:
            at = self.now_s if self.now_s is not None else 0.0
            self.call = RhythmCall(rhythm, since if since is not None else at, at)
            out.append(self.call)
        return out

    @staticmethod
    def _within(spans: deque[list], time_s: float) -> bool:
        """Whether device time ``time_s`` (s) lies in one of ``spans`` as they were known :data:`KNOWN_AFTER_S` after
        it (``[start_s, end_s | None, start_at_s, end_at_s | None]``: the span and when, on the device clock, its start
        and end were decided). A beat is judged by the NOISE / VFL state at its own time as known at a fixed point after
        it, not by what is known when its engine results arrive, so the episodes do not depend on how late those
        came (tests/test_interpretation_order.py)."""
        as_of = time_s + KNOWN_AFTER_S
        return any(start_at <= as_of and start <= time_s and (end is None or end_at > as_of or time_s < end)
                   for start, end, start_at, end_at in spans)

    def _active_start(self, name: str) -> float | None:
        return self._states[name].start_s

    # ------------------------------------------------------------------ outputs
    def ectopic_per_min(self) -> dict[str, float]:
        """PVC (V) and PAC (S) beats in the last :data:`COUNT_WINDOW_S` (s), per minute."""
        now = self.now_s or 0.0
        for times in self._ectopic.values():
            while times and times[0] < now - COUNT_WINDOW_S:
                times.popleft()
        span = min(COUNT_WINDOW_S, max(now - (self._stream_start_s if self._stream_start_s is not None else now), 1.0))
        pvc, pac = len(self._ectopic["V"]), len(self._ectopic["S"])
        return {"pvc_per_min": round(pvc * 60.0 / span, 1), "pac_per_min": round(pac * 60.0 / span, 1)}

    def hr_all_bpm(self) -> float | None:
        """The ventricular rate of the last :data:`RATE_BEATS_ALL` beats of any class (60 / median RR, bpm), None
        before there are that many: what the extreme brady / tachy alarms watch (a monitor's rate counts every QRS,
        whereas the SBR / STACH episodes are sinus rhythms and use N–N intervals only)."""
        if len(self._beat_times) <= RATE_BEATS_ALL:
            return None
        t = self._beat_times  # a few floats, read on every alarm update: plain Python, the same median as numpy's
        ts = list(t)
        rr = sorted(b - a for a, b in zip(ts[:-1], ts[1:], strict=True))
        mid = len(rr) // 2
        median = rr[mid] if len(rr) % 2 else (rr[mid - 1] + rr[mid]) / 2
        return round(60.0 / median, 1)

    def af_burden_pct(self) -> float:
        """Percentage of the last hour (or of the stream, when shorter) spent in AFIB."""
        now = self.now_s or 0.0
        lo = max(now - BURDEN_WINDOW_S, self._stream_start_s if self._stream_start_s is not None else now)
        while self._af_spans and self._af_spans[0][1] < lo:
            self._af_spans.popleft()
        spans = list(self._af_spans)
        if self.af.state.start_s is not None:
            spans.append((self.af.state.start_s, now))
        total = sum(max(0.0, min(e, now) - max(s, lo)) for s, e in spans)
        return round(100.0 * total / max(now - lo, 1e-9), 1) if now > lo else 0.0

    def active(self) -> list[str]:
        """Active episode types, in call priority."""
        return [name for name in CALL_PRIORITY if self._active_start(name) is not None]

    def is_active(self, name: str) -> bool:
        """Whether an episode of type ``name`` (one of :data:`CALL_PRIORITY`) is on now."""
        return self._states[name].active

    def snapshot(self) -> dict[str, Any]:
        """Printable state: the call, active episodes, HR (``hr_all_from_s``: R time of the oldest beat behind
        ``hr_all_bpm``), counts, burden, lead status, the live V run and the latest ended ones (``vt_ended_runs``:
        number, start s, beats, rate bpm)."""
        return {
            "now_s": self.now_s,
            "rhythm": self.call.rhythm,
            "since_s": self.call.since_s,
            "active": {name: self._active_start(name) for name in self.active()},
            "hr_bpm": None if self.rate.hr_bpm is None else round(self.rate.hr_bpm, 1),
            "hr_all_bpm": self.hr_all_bpm(),
            "hr_all_from_s": self._beat_times[0] if self._beat_times else None,
            **self.ectopic_per_min(),
            "af_burden_pct": self.af_burden_pct(),
            "signal": self.quality.status,
            "signal_since_s": self.quality.since_s,
            "last_beat_s": self.last_beat_s,
            "last_rr_s": self.last_rr_s,
            "vt_run_beats": self.vt.run_beats,
            "vt_run_rate_bpm": self.vt.run_rate_bpm,
            "vt_run_start_s": self.vt.run_start_s,
            "vt_ended_runs": list(self.vt.ended),
        }

    def __repr__(self) -> str:
        return f"EpisodeTracker(call={self.call.rhythm} since {self.call.since_s:.1f} s, active={self.active()})"
