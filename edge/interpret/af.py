"""Atrial fibrillation from the beat series: RR irregularity features, this project's AF rule and a literature
baseline.

* :func:`rr_irregularity` — normalised RMSSD, robust normalised successive difference, turning-point ratio and
  Shannon entropy of a window of RR intervals (pure numpy).
* :class:`AFDetector` — this project's rule (see its docstring): irregularity on a 32-interval window of RR
  intervals between supraventricular beats (ectopic beats and the intervals next to them are left out when a class
  is given), non-alternation by the turning-point ratio, and atrial evidence from P waves when the segmenter
  gives them; hysteresis on and off; onsets dated back to the middle of the evidence window.
* :class:`DashAFDetector` — the RR-only baseline of Dash S., Chon K.H., Lu S., Raeder E.A., *Automatic real time
  detection of atrial fibrillation*, Ann Biomed Eng 37(9):1701–1709 (2009): 128-beat window, 8 largest and 8
  smallest RR removed, AF when RMSSD / mean RR > 0.1, Shannon entropy > 0.7 and the turning-point count lies
  within its random-series range.

Flutter (AFL) is not told apart from fibrillation: a flutter with variable conduction is called AFIB, a flutter
with fixed conduction looks regular and is not called AF.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge.interpret.events import BeatEvent, EpisodeEvent, EpisodeState

#: Beat classes whose RR intervals carry the atrial rhythm (supraventricular conduction).
SUPRAVENTRICULAR = ("N",)
#: Beat classes whose P waves (or their absence) are the atrial evidence: every supraventricular beat.
ATRIAL_EVIDENCE = ("N", "S")
#: RR intervals (s) outside this range are detection errors, not rhythm.
RR_RANGE_S = (0.24, 2.5)


def turning_points(x: np.ndarray) -> int:
    """Number of local extrema of ``x`` (strict turning points of the inner samples)."""
    x = np.asarray(x, dtype=float)
    if x.size < 3:
        return 0
    d = np.diff(x)
    return int(np.count_nonzero(d[:-1] * d[1:] < 0))


def shannon_entropy(x: np.ndarray, bins: int = 16) -> float:
    """Shannon entropy of the histogram of ``x`` in ``bins`` equal bins over its range, normalised to [0, 1] by
    ``log(bins)`` (Dash et al. 2009)."""
    x = np.asarray(x, dtype=float)
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    counts, _ = np.histogram(x, bins=bins)
    p = counts[counts > 0] / x.size
    return float(-(p * np.log(p)).sum() / np.log(bins))


def rr_irregularity(rr_s: np.ndarray) -> dict[str, float]:
    """Irregularity features of a window of RR intervals (s).

    Returns ``nrmssd`` (RMSSD / mean RR), ``nmsd`` (median |ΔRR| / median RR: the robust form, which one missed
    or extra beat does not move), ``tpr`` (turning points / (n − 2); 2/3 for a random series, near 1 for an
    alternating one, near 0 for a smooth one) and ``entropy`` (:func:`shannon_entropy`, 16 bins).
    """
    rr = np.asarray(rr_s, dtype=float)
    d = np.diff(rr)
    return {
        "nrmssd": float(np.sqrt(np.mean(d**2)) / np.mean(rr)) if d.size else 0.0,
        "nmsd": float(np.median(np.abs(d)) / np.median(rr)) if d.size else 0.0,
        "tpr": turning_points(rr) / max(1, rr.size - 2),
        "entropy": shannon_entropy(rr),
    }


@dataclass(frozen=True)
class AFConfig:
    """Thresholds of :class:`AFDetector` (tuned on MIT-BIH DS1 and CPSC 2021 subjects 8 and 21; see docs/method.md).

    Attributes:
        window_rr: RR intervals in the evidence window.
        min_rr: fewest clean intervals before any call (a 10 s record at 60 bpm has 9).
        nmsd_on, nmsd_off: robust irregularity (median |ΔRR| / median RR) to switch AF on / keep it on.
        tpr_range: turning-point ratio range of an irregular (not alternating, not smooth) series.
        p_present: fraction of segmented beats with a consistent P wave at or above which AF is not called (sinus
            with ectopy, sinus arrhythmia).
        p_absent: fraction at or below which, when P waves are also rarely found at all (``found_absent``), the
            irregularity threshold is scaled by ``absent_scale`` (AF with a fairly regular response).
        found_absent: fraction of segmented supraventricular beats with any P wave (whatever its PR) at or below
            which P waves count as absent. A sinus rhythm whose P waves the segmenter finds on half the beats at
            scattered PR has few *consistent* P waves but is not P-less (DS1 AF windows: 95th percentile 0.40).
        absent_scale: factor on ``nmsd_on`` / ``nmsd_off`` when P waves are absent.
        entropy_min: Shannon entropy (:func:`shannon_entropy`, 16 bins) of the window's intervals at or above which
            it can be AF. Fibrillation spreads the intervals over the range (DS1 and CPSC 8 + 21 AF windows: 5th
            percentile 0.66-0.77); sinus rhythm with runs of premature beats and pauses puts them in two clusters
            (few bins, entropy ~0.3). Dash et al. 2009 use 0.7 on 128 trimmed intervals.
        pr_tolerance_ms: a P wave counts as present when its PR interval lies within this many ms of the median PR
            of the window's P waves (the segmenter's "P waves" in fibrillation are f waves at random PR).
        on_beats, off_beats: consecutive beats the call must hold before switching on / off.
    """

    window_rr: int = 32
    min_rr: int = 8
    nmsd_on: float = 0.1
    nmsd_off: float = 0.07
    tpr_range: tuple[float, float] = (0.45, 0.9)
    p_present: float = 0.6
    p_absent: float = 0.3
    found_absent: float = 0.4
    absent_scale: float = 0.6
    entropy_min: float = 0.5
    pr_tolerance_ms: float = 20.0
    on_beats: int = 4
    off_beats: int = 4

    def __post_init__(self) -> None:
        if not 4 <= self.min_rr <= self.window_rr:
            raise ValueError(f"AF window needs 4 <= min_rr <= window_rr, got {self.min_rr}, {self.window_rr}")
        if not 0 < self.nmsd_off <= self.nmsd_on:
            raise ValueError(f"AF needs 0 < nmsd_off <= nmsd_on, got {self.nmsd_off}, {self.nmsd_on}")
        if not 0 <= self.entropy_min <= 1 or not 0 <= self.found_absent <= 1:
            raise ValueError(f"AF needs entropy_min and found_absent in [0, 1], got {self.entropy_min}, "
                             f"{self.found_absent}")


class AFDetector:
    """This project's AF rule, one beat at a time.

    A beat's RR interval is *clean* when the beat and the one before it are conducted (class N or no class given,
    or class S with no P wave found: in AF a classifier calls many irregular beats S), the beat is not ``noisy`` and
    the interval lies in :data:`RR_RANGE_S`: ectopic beats (S with a P wave, V, F, Q) and the compensatory intervals
    after them are left out, so frequent PVCs or PACs do not look like AF when a classifier is present. On each
    beat, over the last ``window_rr`` clean intervals (at least ``min_rr``), the call
    is AF when

    * ``nmsd`` (median |ΔRR| / median RR) ≥ ``nmsd_on`` (≥ ``nmsd_off`` to stay on), and
    * the turning-point ratio lies in ``tpr_range`` (bigeminal alternation gives ~1, smooth sinus arrhythmia less),
    * the intervals' histogram entropy is at least ``entropy_min`` (not two clusters: premature runs and pauses),
    * and, when the segmenter reported on at least half of the window's last ``window_rr`` supraventricular beats
      (class N, S or none; S beats with a P wave included, as a premature atrial beat's P wave is atrial evidence):
      the fraction with a *consistent* P wave (PR within ``pr_tolerance_ms`` of the median PR of those beats' P
      waves) is below ``p_present``; at or below ``p_absent``, with a P wave of any PR found on at most
      ``found_absent`` of them, the irregularity thresholds are scaled by ``absent_scale``.

    The call must hold for ``on_beats`` beats to start an episode and fail for ``off_beats`` to end it. Onset and
    offset are dated to the beat at the middle of the window when the call switched, which centres the window's
    lag. ``evidence`` holds the last features (printable).
    """

    def __init__(self, config: AFConfig | None = None):
        self.config = config or AFConfig()
        self.state = EpisodeState("AFIB")
        self.reset()

    def reset(self) -> None:
        c = self.config
        self._rr: deque[float] = deque(maxlen=c.window_rr)
        self._times: deque[float] = deque(maxlen=c.window_rr)
        self._atrial: deque[tuple[bool | None, float | None]] = deque(maxlen=c.window_rr)  # (P wave, PR ms)
        self._prev_sv = True
        self._prev_seen = False
        self._streak = 0
        self.evidence: dict[str, float | str | None] = {}
        self.state.reset()

    @staticmethod
    def _conducted(beat: BeatEvent) -> bool:
        """The beat's RR carries the atrial rhythm: class N or none, or S with no P wave found (in AF a classifier
        calls many irregular, early beats S; a premature atrial beat in sinus rhythm has its own P wave)."""
        return beat.cls is None or beat.cls in SUPRAVENTRICULAR or (beat.cls == "S" and beat.p_wave is False)

    def _clean(self, beat: BeatEvent) -> bool:
        sv = self._conducted(beat)
        ok = (self._prev_seen and sv and self._prev_sv and beat.rr_s is not None and beat.quality != "noisy"
              and RR_RANGE_S[0] <= beat.rr_s <= RR_RANGE_S[1])
        self._prev_sv, self._prev_seen = sv, True
        return ok

    def call(self) -> bool | None:
        """AF (True), not AF (False) on the current window, None with fewer than ``min_rr`` clean intervals."""
        c = self.config
        if len(self._rr) < c.min_rr:
            self.evidence = {"n_rr": len(self._rr)}
            return None
        feats = rr_irregularity(np.fromiter(self._rr, float))
        p_frac, p_found = self.p_fraction(), self.p_found_fraction()
        absent = p_frac is not None and p_frac <= c.p_absent and p_found is not None and p_found <= c.found_absent
        thr = (c.nmsd_off if self.state.active else c.nmsd_on) * (c.absent_scale if absent else 1.0)
        irregular = (feats["nmsd"] >= thr and c.tpr_range[0] <= feats["tpr"] <= c.tpr_range[1]
                     and feats["entropy"] >= c.entropy_min)
        atrial_ok = p_frac is None or p_frac < c.p_present
        self.evidence = {"n_rr": len(self._rr), **{k: round(v, 3) for k, v in feats.items()},
                         "p_fraction": None if p_frac is None else round(p_frac, 2),
                         "p_found": None if p_found is None else round(p_found, 2), "threshold": round(thr, 3)}
        return bool(irregular and atrial_ok)

    def _segmented(self) -> list[tuple[bool, float | None]]:
        """(P wave, PR ms) of the window's segmented supraventricular beats; empty when fewer than half were."""
        seen = [(p, pr) for p, pr in self._atrial if p is not None]
        return seen if seen and len(seen) * 2 >= len(self._atrial) else []

    def p_found_fraction(self) -> float | None:
        """Fraction of the window's segmented supraventricular beats with a P wave at any PR; None when fewer than
        half were segmented."""
        seen = self._segmented()
        return sum(1 for p, _ in seen if p) / len(seen) if seen else None

    def p_fraction(self) -> float | None:
        """Fraction of the window's segmented supraventricular beats with a consistent P wave (PR within
        ``pr_tolerance_ms`` of the median PR of their P waves); None when fewer than half were segmented."""
        seen = self._segmented()
        if not seen:
            return None
        prs = [pr for p, pr in seen if p and pr is not None]
        if not prs:
            return 0.0
        med, tol = float(np.median(prs)), self.config.pr_tolerance_ms
        return sum(1 for p, pr in seen if p and pr is not None and abs(pr - med) <= tol) / len(seen)

    def push(self, beat: BeatEvent) -> list[EpisodeEvent]:
        """Feed one beat; returns the AFIB start / end events it decides."""
        if (beat.cls is None or beat.cls in ATRIAL_EVIDENCE) and beat.quality != "noisy":
            self._atrial.append((beat.p_wave, beat.pr_ms if beat.p_wave else None))
        if self._clean(beat):
            self._rr.append(float(beat.rr_s))  # type: ignore[arg-type]
            self._times.append(beat.time_s)
        elif not self._conducted(beat):
            return []  # an ectopic beat carries no atrial evidence: the call stands
        af = self.call()
        if af is None:
            return []
        self._streak = self._streak + 1 if af != self.state.active else 0
        need = self.config.off_beats if self.state.active else self.config.on_beats
        if self._streak < need:
            return []
        self._streak = 0
        mid = self._times[len(self._times) // 2]
        return self.state.end(mid, beat.time_s) if self.state.active else self.state.start(mid, beat.time_s)

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        """End of stream at device time ``end_s`` (s): close an active episode there."""
        return self.state.end(end_s, end_s)

    def __repr__(self) -> str:
        return f"AFDetector(active={self.state.active}, evidence={self.evidence})"


class DashAFDetector:
    """The RR-only baseline of Dash et al. (2009), slid beat by beat.

    Over the last ``window`` RR intervals (128 in the paper), with the ``trim`` largest and ``trim`` smallest
    removed (8 each) for RMSSD and entropy: AF when RMSSD / mean RR > 0.1, normalised Shannon entropy (16 bins)
    > 0.7, and the turning-point count of the untrimmed window within ``(2n − 4) / 3 ± 1.96 sd`` with
    ``sd = sqrt((16n − 29) / 90)`` (the random-series range). No classes, no P waves, no hysteresis (as
    published); onsets and offsets are dated to the middle of the window.
    """

    def __init__(self, window: int = 128, trim: int = 8, nrmssd_thr: float = 0.1, entropy_thr: float = 0.7):
        if window < 4 * trim + 8:
            raise ValueError(f"Dash window {window} too short for trimming {trim} at each end")
        self.window, self.trim = int(window), int(trim)
        self.nrmssd_thr, self.entropy_thr = float(nrmssd_thr), float(entropy_thr)
        self.state = EpisodeState("AFIB")
        self.reset()

    def reset(self) -> None:
        self._rr: deque[float] = deque(maxlen=self.window)
        self._times: deque[float] = deque(maxlen=self.window)
        self.state.reset()

    def push(self, beat: BeatEvent) -> list[EpisodeEvent]:
        """Feed one beat (its class and P wave are ignored); returns AFIB start / end events."""
        if beat.rr_s is None or not RR_RANGE_S[0] <= beat.rr_s <= RR_RANGE_S[1]:
            return []
        self._rr.append(beat.rr_s)
        self._times.append(beat.time_s)
        if len(self._rr) < self.window:
            return []
        rr = np.fromiter(self._rr, float)
        n = rr.size
        trimmed = np.sort(rr)[self.trim : n - self.trim]
        kept = rr[(rr >= trimmed[0]) & (rr <= trimmed[-1])]  # time order kept for the successive differences
        nrmssd = float(np.sqrt(np.mean(np.diff(kept) ** 2)) / np.mean(kept))
        mu, sd = (2 * n - 4) / 3, np.sqrt((16 * n - 29) / 90)
        tp_ok = abs(turning_points(rr) - mu) <= 1.96 * sd
        af = nrmssd > self.nrmssd_thr and shannon_entropy(trimmed) > self.entropy_thr and tp_ok
        mid = self._times[n // 2]
        if af and not self.state.active:
            return self.state.start(mid, beat.time_s)
        if not af and self.state.active:
            return self.state.end(mid, beat.time_s)
        return []

    def flush(self, end_s: float) -> list[EpisodeEvent]:
        return self.state.end(end_s, end_s)

    def __repr__(self) -> str:
        return f"DashAFDetector(active={self.state.active}, n_rr={len(self._rr)})"
