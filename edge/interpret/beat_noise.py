"""Is a detected beat readable? A per-beat noise gate: an unreadable beat is called Q, never V.

Noise, motion artefact and flutter waves make the detector fire on things that are not QRS complexes, and the beat
classifier calls many of those V (they differ from the patient's dominant beat). EC57 counts a beat called Q
(unclassifiable) for no class's +P, so calling an unreadable beat Q removes a false V; a real V called Q is a missed
V, so the gate must leave clean V beats alone.

The evidence is the beat's **slope ratio** on each monitored lead: over the beat's span ``[R - SPAN_S[0],
R + SPAN_S[1])`` (s) at the internal rate, the steepest first difference ``|x[i+1] - x[i]|`` (mV per sample) within
``± PEAK_S`` of the R peak over the median first difference of the whole span, as ``log10``. A QRS complex is the
steepest part of its beat, many times steeper than the rest of the span; in noise or flutter the whole span is about
as steep as the detected "R". DS1, edge R peaks, the better of the two leads: true V median 1.30 (20x), 1st
percentile 0.83; extra detections called V median 0.65 (4.5x).

The second is the beat's **band ratio** on the classifier's own lead (it sees no other): within ``± SQI_HALF_S`` of
the R peak, ``log10`` of the QRS band's power (:data:`QRS_BAND_HZ`, 5–15 Hz) over the power above
:data:`NOISE_FROM_HZ` (40 Hz, muscle and electrode noise), from the Hann-windowed spectrum of the mean-removed
segment. DS1 true V: median 2.86, 1st percentile 1.70 (50x); extra detections called V: median 2.12, 1st
percentile -0.46.

A beat is **unreadable** when

* its slope ratio is below :data:`SLOPE_LOG10` (0.6: the R peak less than 4x steeper than the span's median) on every
  lead given (the two the edge segments; MIT-BIH: both); or
* its slope ratio is below :data:`FAST_SLOPE_LOG10` (0.8: 6.3x) on every lead and it sits in a burst of detections:
  the mean RR of its last intervals (``local_rr_s`` of :mod:`edge.interpret.rr_features`) below
  :data:`FAST_LOCAL_RR_S` (0.4 s, 150 bpm). Noise bursts give runs of RR < 250 ms; a VT run is fast too, but its
  wide QRS stays the steepest part of its span; or
* its band ratio on the classifier's lead is below :data:`BAND_LOG10` (0.5: less than 3.2x as much QRS-band power
  as noise power), however clean the other lead: the classifier's view of it is noise.

Thresholds were chosen on DS1 only (22 records, the edge's own R peaks, the shipped engine; 1143 detections
wrongly called V, 3695 true V): the slope rules alone (0.6 / 0.8 / 0.4 s) take 332 of the false V (most of them
flutter waves in 207) and none of the true V, true S or V beats of VT runs (no loss anywhere in 0.55–0.6, 0.7–0.85,
0.3–0.45 s); the band rule adds 30 (noise in 108 and 203), still none lost (at 0.75: one true V lost). EC57 gross
VEB on DS1 (``bench/beat_classes.py --ds1``): Se 97.5 % either way, +P 77.3 → 83.7 %.

The rule needs no state of its own: the span is cut from the signal the edge keeps (live) or the record (batch) and
``local_rr_s`` is a column of the beat's RR features, so :func:`unreadable` decides a live beat and
:func:`unreadable_beats` a whole record with the same arithmetic.
"""

from __future__ import annotations

import numpy as np

#: The beat's span: s before and s after the R peak.
SPAN_S = (0.5, 0.7)
#: Half-width of the search for the R peak's steepest slope (s).
PEAK_S = 0.08
#: Below this ``log10`` slope ratio on every lead a beat is unreadable.
SLOPE_LOG10 = 0.6
#: Below this ``log10`` slope ratio on every lead a beat in a burst (:data:`FAST_LOCAL_RR_S`) is unreadable.
FAST_SLOPE_LOG10 = 0.8
#: A beat whose local mean RR (s) is below this is in a burst of detections.
FAST_LOCAL_RR_S = 0.4
#: Half-width of the band ratio's segment around the R peak (s).
SQI_HALF_S = 0.15
#: The QRS band (Hz) and the start of the noise band (Hz) of the band ratio.
QRS_BAND_HZ = (5.0, 15.0)
NOISE_FROM_HZ = 40.0
#: Below this ``log10`` band ratio on the classifier's lead a beat is unreadable.
BAND_LOG10 = 0.5
#: The class an unreadable beat is given (EC57: unclassifiable).
UNREADABLE_CLASS = "Q"
#: Added to both slopes of the slope ratio (mV per sample) and both powers of the band ratio (mV²), so a flat span
#: has ratios 1 (log10 0: unreadable).
_EPS_MV = 1e-6
_EPS_MV2 = 1e-9


def span_samples(fs_hz: float) -> tuple[int, int]:
    """Samples before and after the R peak a beat's span holds at ``fs_hz`` (Hz): cut ``x[r - before : r + after]``."""
    return int(round(SPAN_S[0] * fs_hz)), int(round(SPAN_S[1] * fs_hz))


def slope_log10(spans_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """``log10`` slope ratio of beat spans (module docstring).

    Args:
        spans_mv: ``(..., before + after, L)`` mV, spans of :func:`span_samples` at ``fs_hz``, one column per lead.
        fs_hz: sampling rate (Hz).

    Returns:
        ``(..., L)`` float64, one ratio per beat and lead.
    """
    x = np.asarray(spans_mv, dtype=np.float64)
    before, after = span_samples(fs_hz)
    if x.shape[-2] != before + after:
        raise ValueError(f"a beat span must hold {before + after} samples at {fs_hz} Hz, got {x.shape[-2]}")
    dx = np.abs(np.diff(x, axis=-2))
    half = int(round(PEAK_S * fs_hz))
    peak = dx[..., before - half : before + half, :].max(axis=-2)
    return np.log10((peak + _EPS_MV) / (np.median(dx, axis=-2) + _EPS_MV))


def band_log10(spans_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """``log10`` band ratio (module docstring) of ``(..., before + after)`` one-lead spans (mV, :func:`span_samples`)
    at ``fs_hz`` (Hz): ``(...,)`` float64."""
    x = np.asarray(spans_mv, dtype=np.float64)
    before, _ = span_samples(fs_hz)
    half = int(round(SQI_HALF_S * fs_hz))
    seg = x[..., before - half : before + half]
    seg = seg - seg.mean(axis=-1, keepdims=True)
    power = np.abs(np.fft.rfft(seg * np.hanning(2 * half), axis=-1)) ** 2
    f = np.fft.rfftfreq(2 * half, 1.0 / fs_hz)
    qrs = power[..., (f >= QRS_BAND_HZ[0]) & (f <= QRS_BAND_HZ[1])].sum(axis=-1)
    noise = power[..., f > NOISE_FROM_HZ].sum(axis=-1)
    return np.log10((qrs + _EPS_MV2) / (noise + _EPS_MV2))


def unreadable_spans(spans_mv: np.ndarray, local_rr_s: np.ndarray, fs_hz: float) -> np.ndarray:
    """The gate's decision (module docstring) for ``(k, before + after, L)`` beat spans (mV, :func:`span_samples`,
    column 0 the classifier's lead) and their ``(k,)`` local mean RR (s): ``(k,)`` bool, True for an unreadable
    beat."""
    x = np.asarray(spans_mv, dtype=np.float64)
    best = slope_log10(x, fs_hz).max(axis=-1)
    fast = np.asarray(local_rr_s, dtype=np.float64) < FAST_LOCAL_RR_S
    return (best < SLOPE_LOG10) | (fast & (best < FAST_SLOPE_LOG10)) | (band_log10(x[..., 0], fs_hz) < BAND_LOG10)


def unreadable(span_mv: np.ndarray, local_rr_s: float, fs_hz: float) -> bool:
    """One live beat: its ``(before + after, L)`` span (mV, :func:`span_samples`, column 0 the classifier's lead)
    and local mean RR (s)."""
    return bool(unreadable_spans(np.asarray(span_mv)[None], np.array([local_rr_s]), fs_hz)[0])


def beat_spans(signal_mv: np.ndarray, r_samples: np.ndarray, fs_hz: float) -> np.ndarray:
    """The spans of a whole record's beats, ``(k, before + after, L)`` mV, from ``(n, L)`` leads at ``fs_hz``.

    Samples before the signal repeat its first one, as the edge's signal buffer gives them; samples after it repeat
    its last one (the edge never classifies such a beat: its engine window never fills).
    """
    x = np.asarray(signal_mv)
    before, after = span_samples(fs_hz)
    idx = np.asarray(r_samples, dtype=np.int64)[:, None] + np.arange(-before, after)[None, :]
    return x[np.clip(idx, 0, len(x) - 1)]


def unreadable_beats(signal_mv: np.ndarray, r_samples: np.ndarray, local_rr_s: np.ndarray,
                     fs_hz: float) -> np.ndarray:
    """The gate for a whole record, with the arithmetic of :func:`unreadable`.

    Args:
        signal_mv: ``(n, L)`` the gate's leads (mV) at ``fs_hz``, column 0 the classifier's lead.
        r_samples: ``(k,)`` R peaks as samples of ``signal_mv``.
        local_rr_s: ``(k,)`` each beat's ``local_rr_s`` RR feature (s).
        fs_hz: sampling rate (Hz).

    Returns:
        ``(k,)`` bool, True for an unreadable beat.
    """
    return unreadable_spans(beat_spans(signal_mv, r_samples, fs_hz), local_rr_s, fs_hz)
