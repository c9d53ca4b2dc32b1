"""LUDB: 12-lead 10 s records with per-lead P / QRS / T onset-peak-offset marks -> per-sample wave labels.

Labels are WAVE_CLASSES indices at the internal rate; a wave whose onset or offset mark is missing is labelled
IGNORE over the gap between its neighbouring marks (it is neither trained on nor scored). Each lead also gets its
annotated span [first mark, last mark]: outside it nothing is annotated, so nothing is scored there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.ecg import INTERNAL_FS_HZ, LEADS_12, WAVE_CLASSES
from offline.records import read_annotations, read_record
from train.data.rate import rescale_samples, to_internal_rate

#: Label of samples excluded from the loss and from scoring.
IGNORE: int = -1
_PEAK_TO_CLASS = {"p": WAVE_CLASSES.index("P"), "N": WAVE_CLASSES.index("QRS"), "t": WAVE_CLASSES.index("T")}


@dataclass(frozen=True)
class LudbRecord:
    """One LUDB record at ``fs_hz``.

    Attributes:
        name: record number as text.
        signal_mv: (12, n) float32 in LEADS_12 order.
        labels: (12, n) int8 WAVE_CLASSES index per sample, IGNORE where unknown.
        spans: (12, 2) first and last annotated sample (inclusive) of each lead.
        fs_hz: sampling rate (Hz).
    """

    name: str
    signal_mv: np.ndarray
    labels: np.ndarray
    spans: np.ndarray
    fs_hz: float


def wave_labels(samples: np.ndarray, symbols: list[str], n: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Per-sample labels (n,) and the annotated span from one lead's marks (already at the output rate)."""
    labels = np.zeros(n, dtype=np.int8)
    samples = np.clip(samples, 0, n - 1)
    for i, sym in enumerate(symbols):
        if sym not in _PEAK_TO_CLASS:
            continue
        has_on = i > 0 and symbols[i - 1] == "("
        has_off = i + 1 < len(symbols) and symbols[i + 1] == ")"
        if has_on and has_off:
            labels[samples[i - 1] : samples[i + 1] + 1] = _PEAK_TO_CLASS[sym]
        else:
            lo = samples[i - 1] + 1 if i > 0 else 0
            hi = samples[i + 1] - 1 if i + 1 < len(symbols) else n - 1
            labels[lo : hi + 1] = IGNORE
    return labels, (int(samples.min()), int(samples.max()))


def record_names(root: Path) -> list[str]:
    """Record names listed in ``root/RECORDS`` (``data/1`` -> ``"1"``), in file order."""
    return [line.strip().split("/")[-1] for line in (root / "RECORDS").read_text().splitlines() if line.strip()]


def load_record(root: Path, name: str, fs_hz: float = INTERNAL_FS_HZ) -> LudbRecord:
    """Read record ``name`` from ``root/data`` and its 12 per-lead annotation files."""
    path = root / "data" / name
    rec = read_record(path, leads=LEADS_12)
    signal = to_internal_rate(rec.signal_mv.T, rec.fs_hz, fs_hz)
    labels = np.zeros(signal.shape, dtype=np.int8)
    spans = np.zeros((len(LEADS_12), 2), dtype=np.int64)
    for k, lead in enumerate(LEADS_12):
        samples, symbols = read_annotations(path, lead.lower())
        labels[k], spans[k] = wave_labels(rescale_samples(samples, rec.fs_hz, fs_hz), symbols, signal.shape[1])
    return LudbRecord(name=name, signal_mv=signal, labels=labels, spans=spans, fs_hz=fs_hz)


def split(names: list[str], seed: int, test_fraction: float, val_fraction: float) -> dict[str, list[str]]:
    """Split record names into train / val / test by record (seeded permutation; the same seed gives the same split)."""
    order = np.random.default_rng(seed).permutation(len(names))
    n_test, n_val = round(test_fraction * len(names)), round(val_fraction * len(names))
    pick = [names[i] for i in order]
    return {"test": pick[:n_test], "val": pick[n_test : n_test + n_val], "train": pick[n_test + n_val :]}
