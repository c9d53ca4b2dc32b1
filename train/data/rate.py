"""Offline resampling to the internal rate (the edge's streaming resampler reproduces ``resample_poly`` exactly), and
reading a 12-lead record at that rate."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from edge.ecg import INTERNAL_FS_HZ, LEADS_12
from offline.records import read_record


def to_internal_rate(signal: np.ndarray, fs_hz: float, fs_out_hz: float = INTERNAL_FS_HZ) -> np.ndarray:
    """Resample a (leads, n) signal along its last axis from ``fs_hz`` to ``fs_out_hz``; returns float32."""
    ratio = Fraction(fs_out_hz / fs_hz).limit_denominator(1000)
    if ratio == 1:
        return signal.astype(np.float32)
    return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)


def rescale_samples(samples: np.ndarray, fs_hz: float, fs_out_hz: float = INTERNAL_FS_HZ) -> np.ndarray:
    """Sample indices at ``fs_hz`` -> nearest indices at ``fs_out_hz`` (int64)."""
    return np.round(np.asarray(samples) * (fs_out_hz / fs_hz)).astype(np.int64)


def read_12_lead(path: Path, fs_hz: float = INTERNAL_FS_HZ) -> np.ndarray:
    """(12, n) float32 mV of the WFDB record at ``path`` (no extension) in LEADS_12 order, resampled to ``fs_hz``."""
    rec = read_record(path, leads=LEADS_12)
    return to_internal_rate(rec.signal_mv.T, rec.fs_hz, fs_hz)
