"""Hand-crafted ECG features behind Beat-SSL's soft targets, and their similarity in [0, 1].

Rhythm level (one vector per 10 s record, computed on the raw signal and the R peaks of ``edge.detection.beats``):
heart rate and RR variability (SDNN, RMSSD) by the edge's convention (:func:`edge.interpret.rhythm.rr_stats`:
60 / median RR, ddof-1 SDNN, at least 3 RR for the variability), QRS width proxy, R and T amplitudes, and the frontal
QRS axis (as cos/sin, when leads I and aVF exist), measured on the lead of :func:`edge.ecg.preferred_lead`.
Beat level: the beat's waveform on the reference lead, z-scored, so that the similarity of two beats is their
correlation. The choice is documented in docs/method.md.
"""

from __future__ import annotations

import numpy as np

from edge.ecg import preferred_lead
from edge.interpret.rhythm import rr_stats

#: Names of the rhythm feature vector, in order.
RHYTHM_FEATURES: tuple[str, ...] = (
    "hr_bpm",
    "sdnn_ms",
    "rmssd_ms",
    "qrs_width_ms",
    "r_amp_mv",
    "t_amp_mv",
    "axis_cos",
    "axis_sin",
)


def reference_lead(leads: tuple[str, ...]) -> int:
    """Index of the lead rhythm and beat features are measured on: :func:`edge.ecg.preferred_lead` (II, MLII …)."""
    return preferred_lead(leads)


def _qrs_width_ms(x: np.ndarray, r: int, fs_hz: float) -> float:
    """Width (ms) of the region around an R peak where the slope exceeds 20 % of its local maximum."""
    half = int(0.1 * fs_hz)
    seg = np.abs(np.diff(x[max(0, r - half) : r + half]))
    if seg.size < 3:
        return float("nan")
    above = np.flatnonzero(seg >= 0.2 * seg.max())
    return float((above[-1] - above[0] + 1) * 1000.0 / fs_hz)


def rhythm_features(ecg: np.ndarray, r_peaks: np.ndarray, leads: tuple[str, ...], fs_hz: float) -> np.ndarray:
    """Rhythm feature vector (RHYTHM_FEATURES order, NaN where undefined) of one (L, n) record in mV."""
    out = np.full(len(RHYTHM_FEATURES), np.nan)
    x = ecg[reference_lead(leads)]
    x = x - np.median(x)
    r_peaks = np.asarray(r_peaks, dtype=int)
    rr = rr_stats(np.diff(r_peaks) / fs_hz)
    out[:3] = [np.nan if v is None else v for v in (rr.hr_bpm, rr.sd_ms, rr.rmssd_ms)]
    if len(r_peaks) >= 1:
        out[3] = np.nanmedian([_qrs_width_ms(x, r, fs_hz) for r in r_peaks])
        out[4] = np.median(x[r_peaks])
        t_lo, t_hi = int(0.15 * fs_hz), int(0.4 * fs_hz)
        t_amp = [x[r + t_lo : r + t_hi].max() for r in r_peaks if r + t_hi <= len(x)]
        out[5] = np.median(t_amp) if t_amp else np.nan
        if "I" in leads and "aVF" in leads:
            w = int(0.05 * fs_hz)
            net = [sum(ecg[leads.index(lead), max(0, r - w) : r + w].sum() for r in r_peaks) for lead in ("I", "aVF")]
            angle = np.arctan2(net[1], net[0])
            out[6], out[7] = np.cos(angle), np.sin(angle)
    return out


def standardise(features: np.ndarray) -> np.ndarray:
    """Z-score (n, d) features per column over the corpus; undefined entries become 0 (the column mean)."""
    defined = np.isfinite(features)
    count = np.maximum(defined.sum(axis=0), 1)
    filled = np.where(defined, features, 0.0)
    mean = filled.sum(axis=0) / count
    std = np.sqrt((np.where(defined, features - mean, 0.0) ** 2).sum(axis=0) / count)
    z = (features - mean) / np.where(std > 0, std, 1.0)
    return np.nan_to_num(z, nan=0.0)


def beat_templates(x: np.ndarray, r_peaks: np.ndarray, fs_hz: float, window_s: tuple[float, float]) -> np.ndarray:
    """(k, w) z-scored beat waveforms of one lead around each R peak; window_s = (before, after) in seconds.

    Every peak must leave a full window inside ``x``.
    """
    before, after = int(round(window_s[0] * fs_hz)), int(round(window_s[1] * fs_hz))
    beats = np.stack([x[r - before : r + after] for r in r_peaks]) if len(r_peaks) else np.zeros((0, before + after))
    beats = beats - beats.mean(axis=1, keepdims=True)
    return (beats / np.maximum(beats.std(axis=1, keepdims=True), 1e-6)).astype(np.float32)


def cosine_similarity01(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise (1 + cosine) / 2 in [0, 1] between rows of (n, d) and (m, d); z-scored rows: (1 + Pearson r) / 2."""
    an = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.clip((1.0 + an @ bn.T) / 2.0, 0.0, 1.0)
