"""Any WFDB folder as unlabelled 10 s windows at the internal rate, with R peaks from the project's beat detector.

R peaks come from ``detect_record`` run once on the whole raw record (the one detector of the project,
shared with the edge); they are mapped to the internal rate and to window coordinates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detection.beats import detect_record
from edge.ecg import INTERNAL_FS_HZ, LEADS_12
from offline.records import RecordError, read_record
from train.data.rate import rescale_samples, to_internal_rate


@dataclass(frozen=True)
class Window:
    """One unlabelled window.

    Attributes:
        source: data folder name (``"mitdb"``).
        record: record name.
        leads: lead names of the rows of ``signal_mv`` (LEADS_12 order when the record has all twelve).
        signal_mv: (L, n) float32 mV at the internal rate.
        r_peaks: R-peak sample indices inside the window (internal rate).
    """

    source: str
    record: str
    leads: tuple[str, ...]
    signal_mv: np.ndarray
    r_peaks: np.ndarray


def record_paths(folder: Path) -> list[Path]:
    """Every WFDB record (``*.hea``) below ``folder``, sorted, without extension."""
    return sorted(p.with_suffix("") for p in folder.rglob("*.hea"))


def record_windows(
    path: Path, source: str, window_s: float, max_windows: int, fs_hz: float = INTERNAL_FS_HZ
) -> list[Window]:
    """Cut one record into up to ``max_windows`` consecutive non-overlapping windows of ``window_s`` seconds."""
    rec = read_record(path)
    if set(LEADS_12) <= set(rec.leads):
        rec = read_record(path, leads=LEADS_12)
    peaks = rescale_samples([b.sample for b in detect_record(rec.signal_mv, rec.fs_hz)], rec.fs_hz, fs_hz)
    signal = to_internal_rate(rec.signal_mv.T, rec.fs_hz, fs_hz)
    n = int(round(window_s * fs_hz))
    out = []
    for k in range(min(max_windows, signal.shape[1] // n)):
        lo = k * n
        inside = peaks[(peaks >= lo) & (peaks < lo + n)] - lo
        out.append(Window(source, rec.name, rec.leads, signal[:, lo : lo + n], inside))
    return out


def folder_windows(
    root: Path, sources: Iterable[str], window_s: float, max_windows: int, exclude: set[Path] = frozenset()
) -> list[Window]:
    """Windows of every readable record below ``root/<source>`` for each source.

    Records whose path (without extension) is in ``exclude`` are skipped (held-out splits), unreadable ones too.
    """
    out: list[Window] = []
    for source in sources:
        for path in record_paths(root / source):
            if path in exclude:
                continue
            try:
                out += record_windows(path, source, window_s, max_windows)
            except RecordError:
                continue
    return out
