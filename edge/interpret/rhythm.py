"""Rhythm description from the beat series, window usability, and label smoothing with hysteresis.

Pure functions and one small state object (:class:`LabelSmoother`); the classifier's probabilities come from the
inference engine, everything else here comes from the detected beats and the signal.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Heart rate bounds of the rate description (bpm).
BRADY_BPM = 60.0
TACHY_BPM = 100.0
#: RR coefficient of variation above which the rhythm is called irregular.
IRREGULAR_CV = 0.12


#: RR intervals outside this range (s) are not beats to beats (missed or doubled detections) and are left out.
RR_RANGE_S = (0.2, 3.0)


@dataclass(frozen=True)
class RRStats:
    """Heart rate and RR variability of a beat series, unrounded (None: too few RR intervals).

    Attributes:
        n_rr: RR intervals inside :data:`RR_RANGE_S` (the ones used).
        hr_bpm: 60 / median RR (at least 1 RR).
        sd_ms: sample standard deviation (ddof 1) of RR, i.e. SDNN (at least 3 RR).
        rmssd_ms: root mean square of successive RR differences (at least 3 RR).
        cv: sd / mean RR (at least 3 RR).
    """

    n_rr: int
    hr_bpm: float | None
    sd_ms: float | None
    rmssd_ms: float | None
    cv: float | None


def rr_stats(rr_s: np.ndarray) -> RRStats:
    """The one heart-rate / HRV convention of the repo (edge messages and training features alike).

    RR intervals (s) outside :data:`RR_RANGE_S` are dropped; HR = 60 / median RR (robust to one missed or extra
    beat), SDNN with ddof 1, RMSSD and CV need at least 3 RR intervals.
    """
    rr = np.asarray(rr_s, dtype=float)
    rr = rr[(rr > RR_RANGE_S[0]) & (rr < RR_RANGE_S[1])]
    if len(rr) == 0:
        return RRStats(0, None, None, None, None)
    hr = 60.0 / float(np.median(rr))
    if len(rr) < 3:
        return RRStats(len(rr), hr, None, None, None)
    sd = float(np.std(rr, ddof=1))
    rmssd = float(np.sqrt(np.mean(np.diff(rr) ** 2)))
    return RRStats(len(rr), hr, sd * 1e3, rmssd * 1e3, sd / float(np.mean(rr)))


def describe_rr(rr_s: np.ndarray) -> dict[str, object]:
    """Heart rate and regularity from RR intervals (s), by :func:`rr_stats`, rounded for the rhythm messages.

    Returns ``hr_bpm`` (60 / median RR), ``rate`` (brady / normal / tachy), ``regularity`` (regular / irregular /
    unknown with fewer than 3 RR), ``rr_sd_ms``, ``rmssd_ms`` and ``rr_cv``.
    """
    st = rr_stats(rr_s)
    if st.hr_bpm is None:
        return {"hr_bpm": None, "rate": "unknown", "regularity": "unknown", "rr_sd_ms": None, "rmssd_ms": None,
                "rr_cv": None}
    rate = "brady" if st.hr_bpm < BRADY_BPM else "tachy" if st.hr_bpm > TACHY_BPM else "normal"
    if st.cv is None:
        return {"hr_bpm": round(st.hr_bpm, 1), "rate": rate, "regularity": "unknown", "rr_sd_ms": None,
                "rmssd_ms": None, "rr_cv": None}
    return {
        "hr_bpm": round(st.hr_bpm, 1),
        "rate": rate,
        "regularity": "irregular" if st.cv > IRREGULAR_CV else "regular",
        "rr_sd_ms": round(st.sd_ms, 1),
        "rmssd_ms": round(st.rmssd_ms, 1),
        "rr_cv": round(st.cv, 3),
    }


def window_problem(window_mv: np.ndarray, fs_hz: float, n_beats: int, restarted: bool) -> str | None:
    """Why a (T, L) signal window is unusable for classification, or None when it is usable.

    ``gap``: the stream restarted inside the window; ``lead_off``: a lead is flat (sd < 5 µV); ``noise``: more than
    half of the signal power lies above 40 Hz or the signal clips; ``no_beats``: fewer than 2 beats in the window.
    """
    if restarted:
        return "gap"
    if (window_mv.std(axis=0) < 0.005).any():
        return "lead_off"
    x = window_mv - window_mv.mean(axis=0)
    spec = np.abs(np.fft.rfft(x, axis=0)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / fs_hz)
    high = spec[freqs > 40.0].sum() / max(spec.sum(), 1e-12)
    if high > 0.5 or (np.abs(window_mv) > 15.0).any():
        return "noise"
    if n_beats < 2:
        return "no_beats"
    return None


@dataclass
class LabelSmoother:
    """Hysteresis on multilabel probabilities so labels do not flicker.

    A label switches on once its probability has been ≥ its threshold for ``on_windows`` consecutive windows, and
    off once it has been below its off level for ``off_windows`` consecutive windows. The off level is threshold −
    ``margin``, but never below half the threshold: a threshold under ``margin`` (tuned on validation data of a
    confident model, e.g. 0.04) would otherwise give a negative off level and a label that never goes off.
    """

    thresholds: dict[str, float]
    margin: float = 0.1
    on_windows: int = 2
    off_windows: int = 2
    active: set[str] = field(default_factory=set)
    _above: dict[str, int] = field(default_factory=dict)
    _below: dict[str, int] = field(default_factory=dict)

    def update(self, probs: dict[str, float]) -> list[str]:
        """Feed one window's probabilities; return the active labels (in threshold order)."""
        for name, thr in self.thresholds.items():
            p = probs.get(name, 0.0)
            self._above[name] = self._above.get(name, 0) + 1 if p >= thr else 0
            self._below[name] = self._below.get(name, 0) + 1 if p < max(thr - self.margin, thr / 2) else 0
            if name not in self.active and self._above[name] >= self.on_windows:
                self.active.add(name)
            elif name in self.active and self._below[name] >= self.off_windows:
                self.active.discard(name)
        return [name for name in self.thresholds if name in self.active]

    def reset(self) -> None:
        self.active.clear()
        self._above.clear()
        self._below.clear()
