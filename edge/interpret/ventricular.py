"""Ectopic runs and patterns from beat classes, and ventricular flutter / fibrillation from the signal.

* :class:`RunDetector` — a run of consecutive beats of one class at a rate above a limit: VT (class V, ≥ 3 beats,
  rate limit from :class:`edge.interpret.episodes.EpisodeConfig`) and, configured with class S, SVTA (≥ 3 S beats,
  > 100 bpm). Runs at or below the limit are not reported. A V run also needs its V beats' median V probability
  to be at least :data:`MIN_MEDIAN_PROB` (0.2), and a single fusion beat (F) between two V beats belongs to the
  run (:data:`BRIDGE_CLASS`); see :class:`RunDetector`.
* :class:`PatternDetector` — ventricular bigeminy (B: N V N V …) and trigeminy (T: N N V N N V …).
* :class:`VFDetector` — ventricular flutter / fibrillation (VFL) from the band-passed signal, by the *VF filter*
  of Kuo S., Dillman R., *Computer detection of ventricular fibrillation*, Computers in Cardiology 1978:347–349
  (evaluated by Amann A., Tratnig R., Unterkofler K., *Reliability of old and new ventricular fibrillation
  detection algorithms for automated external defibrillators*, BioMed Eng OnLine 4:60, 2005), with the dominant
  frequency required in 2.5–7.5 Hz. The leakage limit is 0.5, not the 0.406 Amann et al. chose for a shock
  decision: a monitor's VF alarm must not miss flutter. Measured on the band-passed MLII of all 29 MIT-BIH records
  here (4 s windows, 1 s apart, the amplitude and frequency tests included): no window outside a reference
  ``(VFL`` episode passes at 0.5 (0 of ~55 000, 0 of 2 710 that straddle a rhythm change), while the VFL windows
  that pass go from 58 to 83 of 121; at 0.55 five straddling windows pass.

Beats without a class (no classifier, or a detection the classifier skipped) neither extend nor break a run or a
pattern: the class detectors need classes, and without any they stay silent.
"""

from __future__ import annotations

import statistics
from collections import deque

import numpy as np

from edge.ecg import INTERNAL_FS_HZ
from edge.interpret.events import BeatEvent, EpisodeEvent, EpisodeState

#: Beat classes that may stand as the conducted ("N") beats of a bigeminy or trigeminy cycle.
CONDUCTED = ("N", "S")
#: Ended runs a :class:`RunDetector` keeps for readers that look between bursts of beats.
ENDED_RUNS_KEPT = 16
#: Least median probability of the run's class over the run's beats of that class, by run class (classes not listed:
#: none). The beat classifier calls V from a probability of ~0.1 up (its V threshold is 0.126 of ``argmax(p / t)``),
#: which catches the ambiguous beats of real VT; a run made only of such calls is no VT. 0.2: chosen on MIT-BIH DS1,
#: below the weakest VT run found there (median 0.255; docs/method.md, "VT runs on the edge's classes").
MIN_MEDIAN_PROB: dict[str, float] = {"V": 0.2}
#: A single beat of this class between two beats of the run's class extends the run, by run class: a fusion beat (F)
#: inside a V run (half ventricular; in VT it is where a sinus beat fuses with the run).
BRIDGE_CLASS: dict[str, str] = {"V": "F"}


class RunDetector:
    """Runs of ≥ ``min_beats`` consecutive beats of class ``cls`` whose mean rate exceeds ``min_rate_bpm`` and whose
    beats of class ``cls`` have a median probability of that class (``class_probs``) of at least
    ``min_median_prob``.

    The rate of a run of n beats is ``60 (n − 1) / (t_last − t_first)`` (bpm). A single beat of class ``bridge``
    between two beats of the run belongs to it (it counts as a beat, not in the median); one at the end of a run
    is not, and two in a row end it. A beat of class ``cls`` without probabilities counts as probability 1.
    The episode starts at the first beat of the run (decided at the first beat at which the run meets all three
    limits) and ends at its last beat (decided at the next classed beat that does not continue it).
    :attr:`run_beats`, :attr:`run_rate_bpm` and :attr:`run_start_s` describe the current run once it has met the
    probability limit (``run_beats`` is 0 until it has: the VT alarm reads them); :attr:`ended` holds the latest
    :data:`ENDED_RUNS_KEPT` runs that ended having met it, as ``(number, start_s, beats, rate_bpm)`` with ``number``
    counting from 1 since the reset, so a reader that looks less often than beats come (they arrive in bursts) still
    sees a run that began and ended between two looks.

    Args:
        rhythm: the episode's rhythm code; cls: the run's beat class.
        min_beats: beats in a run (≥ 2); min_rate_bpm: the rate (bpm) a run must exceed.
        min_median_prob: least median class probability (0–1); None: :data:`MIN_MEDIAN_PROB` for ``cls``, else 0.
        bridge: class of a single beat that may sit inside a run; None: :data:`BRIDGE_CLASS` for ``cls`` (else
            none); ``""``: none.
    """

    def __init__(self, rhythm: str, cls: str, min_beats: int = 3, min_rate_bpm: float = 100.0,
                 min_median_prob: float | None = None, bridge: str | None = None):
        if min_beats < 2 or min_rate_bpm <= 0:
            raise ValueError(f"a run needs min_beats >= 2 and min_rate_bpm > 0, got {min_beats}, {min_rate_bpm}")
        self.cls, self.min_beats, self.min_rate_bpm = cls, int(min_beats), float(min_rate_bpm)
        self.min_median_prob = float(MIN_MEDIAN_PROB.get(cls, 0.0) if min_median_prob is None else min_median_prob)
        if not 0.0 <= self.min_median_prob <= 1.0:
            raise ValueError(f"min_median_prob must be in [0, 1], got {self.min_median_prob}")
        self.bridge = BRIDGE_CLASS.get(cls) if bridge is None else bridge
        if self.bridge == cls:
            raise ValueError(f"a run's bridge class must differ from its class {cls!r}")
        self.state = EpisodeState(rhythm)
        self.reset()

    def reset(self) -> None:
        self._run: list[float] = []  # R times (s) of the run's beats, bridge beats included
        self._probs: list[float] = []  # class probability of the run's beats of class cls
        self._bridge_s: float | None = None  # R time (s) of a bridge beat after the run, waiting for the next beat
        self._probable = False  # the run has met min_median_prob (it stays probable until it ends)
        self.ended: deque[tuple[int, float, int, float | None]] = deque(maxlen=ENDED_RUNS_KEPT)
        self._count = 0
        self.state.reset()

    def _end_run(self) -> None:
        if self._run and self.probable:
            self._count += 1
            self.ended.append((self._count, self._run[0], len(self._run), self._rate_bpm()))
        self._run, self._probs, self._bridge_s, self._probable = [], [], None, False

    @property
    def probable(self) -> bool:
        """Whether the current run's median class probability has met ``min_median_prob`` at one of its beats since
        it had ``min_beats`` beats (False before)."""
        return self._probable

    @property
    def run_beats(self) -> int:
        return len(self._run) if self.probable else 0

    @property
    def run_start_s(self) -> float | None:
        return self._run[0] if self._run and self.probable else None

    @property
    def run_rate_bpm(self) -> float | None:
        return self._rate_bpm() if self.probable else None

    def _rate_bpm(self) -> float | None:
        if len(self._run) < 2 or self._run[-1] <= self._run[0]:
            return None
        return 60.0 * (len(self._run) - 1) / (self._run[-1] - self._run[0])

    def push(self, beat: BeatEvent) -> list[EpisodeEvent]:
        if beat.cls is None:
            return []
        if beat.cls == self.bridge and self._run and self._bridge_s is None:
            self._bridge_s = beat.time_s  # inside the run if the next classed beat continues it
            return []
        if beat.cls != self.cls:
            events = self.state.end(self._run[-1], beat.time_s) if self._run else []
            self._end_run()
            return events
        if self._bridge_s is not None:
            self._run.append(self._bridge_s)
            self._bridge_s = None
        self._run.append(beat.time_s)
        self._probs.append(1.0 if beat.class_probs is None else float(beat.class_probs.get(self.cls, 1.0)))
        if not self._probable and len(self._run) >= self.min_beats:
            self._probable = statistics.median(self._probs) >= self.min_median_prob
        rate = self._rate_bpm()
        if len(self._run) >= self.min_beats and rate is not None and rate > self.min_rate_bpm and self.probable:
            return self.state.start(self._run[0], beat.time_s)
        return []

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        events = self.state.end(self._run[-1] if self._run else end_s, end_s)
        self._end_run()
        return events

    def __repr__(self) -> str:
        return (f"RunDetector({self.state.rhythm}, run={len(self._run)} beats, rate={self._rate_bpm()}, "
                f"probable={self.probable})")


class PatternDetector:
    """Ventricular bigeminy (``conducted = 1``: N V N V …) or trigeminy (``conducted = 2``: N N V N N V …).

    A *cycle* is a V beat preceded by exactly ``conducted`` conducted beats (N or S) since the previous V beat (or,
    for the first cycle, at least that many). The episode starts after ``min_cycles`` consecutive cycles, dated to
    the first conducted beat of the first cycle, and ends at the beat that breaks the pattern (one conducted beat
    too many, two V beats in a row, or an F / Q beat).
    """

    def __init__(self, rhythm: str, conducted: int, min_cycles: int = 3):
        if conducted not in (1, 2) or min_cycles < 2:
            raise ValueError(f"pattern needs conducted in (1, 2) and min_cycles >= 2, got {conducted}, {min_cycles}")
        self.conducted, self.min_cycles = int(conducted), int(min_cycles)
        self.state = EpisodeState(rhythm)
        self.reset()

    def reset(self) -> None:
        self.cycles = 0
        self._since_v = 0  # consecutive conducted beats since the last V (or F / Q, or the stream start)
        self._recent: deque[float] = deque(maxlen=self.conducted + 1)  # times of the last classed beats
        self._first_s: float | None = None
        self.state.reset()

    def push(self, beat: BeatEvent) -> list[EpisodeEvent]:
        if beat.cls is None:
            return []
        self._recent.append(beat.time_s)
        events: list[EpisodeEvent] = []
        if beat.cls == "V":
            if self.cycles and self._since_v == self.conducted:
                self.cycles += 1
            elif self._since_v >= self.conducted:
                events += self.state.end(beat.time_s, beat.time_s)
                self.cycles, self._first_s = 1, self._recent[0]
            else:  # two V beats too close: the pattern breaks
                events += self.state.end(beat.time_s, beat.time_s)
                self.cycles = 0
            self._since_v = 0
            if self.cycles >= self.min_cycles and self._first_s is not None:
                events += self.state.start(self._first_s, beat.time_s)
        elif beat.cls in CONDUCTED:
            self._since_v += 1
            if self.cycles and self._since_v > self.conducted:
                events += self.state.end(beat.time_s, beat.time_s)
                self.cycles = 0
        else:  # F or Q breaks the pattern
            events += self.state.end(beat.time_s, beat.time_s)
            self.cycles, self._since_v = 0, 0
        return events

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        return self.state.end(end_s, end_s)

    def __repr__(self) -> str:
        return f"PatternDetector({self.state.rhythm}, cycles={self.cycles})"


def vf_leakage(x_mv: np.ndarray) -> float:
    """Leakage of the VF filter (Kuo & Dillman 1978) on a window of samples.

    The window is taken as a sine of half period ``N = round(π Σ|x_i| / Σ|x_i − x_{i−1}|)`` samples; the leakage
    ``Σ|x_i + x_{i−N}| / Σ(|x_i| + |x_{i−N}|)`` is near 0 for a sine (VF, flutter) and near 1 for QRS complexes
    separated by flat baseline.
    """
    x = np.asarray(x_mv, dtype=float)
    x = x - x.mean()
    dsum = np.abs(np.diff(x)).sum()
    if dsum == 0:
        return 1.0
    n = int(np.floor(np.pi * np.abs(x).sum() / dsum + 0.5))
    if n < 1 or n >= x.size:
        return 1.0
    a, b = x[n:], x[:-n]
    return float(np.abs(a + b).sum() / max((np.abs(a) + np.abs(b)).sum(), 1e-12))


def dominant_frequency_hz(x_mv: np.ndarray, fs_hz: float, hann: np.ndarray | None = None) -> float:
    """Frequency (Hz) of the largest peak of the Hann-windowed power spectrum of ``x_mv``, 0.5–30 Hz (``hann``:
    ``np.hanning(len(x_mv))``, passed by a caller that analyses many windows of one length)."""
    x = np.asarray(x_mv, dtype=float)
    spec = np.abs(np.fft.rfft((x - x.mean()) * (np.hanning(x.size) if hann is None else hann))) ** 2
    freqs = np.fft.rfftfreq(x.size, 1.0 / fs_hz)
    band = (freqs >= 0.5) & (freqs <= 30.0)
    return float(freqs[band][np.argmax(spec[band])]) if band.any() else 0.0


class VFDetector:
    """VFL (ventricular flutter / fibrillation) from the band-passed signal, in windows of ``window_s`` every
    ``hop_s``.

    A window is VF-like when its VF-filter leakage (:func:`vf_leakage`) is below ``leakage_thr`` (0.5, module
    docstring), its dominant frequency lies in ``band_hz`` (2.5–7.5 Hz: 150–450 /min) and its peak-to-peak
    amplitude is at least ``min_ptp_mv`` (fine VF below that reads as asystole). The episode starts after
    ``on_windows`` (2) consecutive VF-like windows (dated to the start of the first) and ends after ``off_windows``
    (4, i.e. 2 s) windows that are not (dated to the end of the last VF-like window). With 4 s windows every 0.5 s
    the episode is decided 4.5 s after the first window that lies wholly in VF began, at the earliest (5 s with the
    former 1 s hop); on MIT-BIH 207's six VFL episodes the start came 2.1–5.4 s after the reference onset (before:
    3.1–6.9 s, one missed), and no VFL started on the other 28 records. ``usable`` windows only: the caller says
    when the signal is lead-off or noise (``usable=False``), and a window holding any such sample is not VF-like.
    """

    def __init__(self, fs_hz: float = INTERNAL_FS_HZ, window_s: float = 4.0, hop_s: float = 0.5,
                 leakage_thr: float = 0.5, band_hz: tuple[float, float] = (2.5, 7.5), min_ptp_mv: float = 0.3,
                 on_windows: int = 2, off_windows: int = 4):
        self.fs_hz = float(fs_hz)
        self.window = int(round(window_s * fs_hz))
        self.hop = int(round(hop_s * fs_hz))
        self.leakage_thr, self.band_hz, self.min_ptp_mv = float(leakage_thr), band_hz, float(min_ptp_mv)
        self.on_windows, self.off_windows = int(on_windows), int(off_windows)
        self._hann = np.hanning(self.window)
        self.state = EpisodeState("VFL")
        self.reset()

    def reset(self) -> None:
        self._buf = np.zeros(0)
        self._ok = np.zeros(0, dtype=bool)
        self._buf_t0 = 0.0
        self._next = self.window  # buffer length at which the next window is complete
        self._on = 0
        self._off = 0
        self._first_s: float | None = None
        self._last_vf_end_s: float | None = None
        self.evidence: dict[str, float] = {}
        self.state.reset()

    def window_is_vf(self, x_mv: np.ndarray) -> bool:
        leak = vf_leakage(x_mv)
        f = dominant_frequency_hz(x_mv, self.fs_hz, self._hann if len(x_mv) == self.window else None)
        ptp = float(np.ptp(x_mv))
        self.evidence = {"leakage": round(leak, 3), "freq_hz": round(f, 2), "ptp_mv": round(ptp, 2)}
        return leak < self.leakage_thr and self.band_hz[0] <= f <= self.band_hz[1] and ptp >= self.min_ptp_mv

    def push(self, chunk_mv: np.ndarray, t0_s: float, usable: bool = True) -> list[EpisodeEvent]:
        """Feed band-passed samples ``(n,)`` mV at ``fs_hz`` whose first sample is at device time ``t0_s`` (s)."""
        chunk = np.asarray(chunk_mv, dtype=float).ravel()
        if not self._buf.size:
            self._buf_t0 = t0_s
        self._buf = np.concatenate([self._buf, chunk])
        self._ok = np.concatenate([self._ok, np.full(chunk.size, bool(usable))])
        events: list[EpisodeEvent] = []
        while self._buf.size >= self.window:
            x = self._buf[: self.window]
            start_s = self._buf_t0
            end_s = start_s + self.window / self.fs_hz
            vf = bool(self._ok[: self.window].all()) and self.window_is_vf(x)
            if vf:
                self._on += 1
                self._off = 0
                if self._on == 1:
                    self._first_s = start_s
                self._last_vf_end_s = end_s
                if self._on >= self.on_windows and self._first_s is not None:
                    events += self.state.start(self._first_s, end_s)
            else:
                self._on = 0
                self._off += 1
                if self._off >= self.off_windows and self._last_vf_end_s is not None:
                    events += self.state.end(self._last_vf_end_s, end_s)
            self._buf, self._ok = self._buf[self.hop :], self._ok[self.hop :]
            self._buf_t0 += self.hop / self.fs_hz
        return events

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        return self.state.end(end_s, end_s)

    def __repr__(self) -> str:
        return f"VFDetector(active={self.state.active}, evidence={self.evidence})"
