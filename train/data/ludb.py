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
from offline.annotations import LUDB_EXTENSIONS, wave_marks
from offline.records import read_annotations, read_record
from train.data.rate import rescale_samples, to_internal_rate

#: Label of samples excluded from the loss and from scoring.
IGNORE: int = -1


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
    """Per-sample labels (n,) and the annotated span from one lead's marks (already at the output rate, samples).

    A wave with both boundaries is labelled from onset to offset (inclusive); an open one makes the stretch between
    its neighbouring marks IGNORE.
    """
    labels = np.zeros(n, dtype=np.int8)
    samples = np.clip(samples, 0, n - 1)
    for mark in wave_marks(samples, symbols):
        if mark.on is not None and mark.off is not None:
            labels[mark.on : mark.off + 1] = WAVE_CLASSES.index(mark.wave)
        else:
            lo = mark.before + 1 if mark.before is not None else 0
            hi = mark.after - 1 if mark.after is not None else n - 1
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
    for k, extension in enumerate(LUDB_EXTENSIONS):
        samples, symbols = read_annotations(path, extension)
        labels[k], spans[k] = wave_labels(rescale_samples(samples, rec.fs_hz, fs_hz), symbols, signal.shape[1])
    return LudbRecord(name=name, signal_mv=signal, labels=labels, spans=spans, fs_hz=fs_hz)


def split(names: list[str], seed: int, test_fraction: float, val_fraction: float) -> dict[str, list[str]]:
    """Split record names into train / val / test by record (seeded permutation; the same seed gives the same split)."""
    order = np.random.default_rng(seed).permutation(len(names))
    n_test, n_val = round(test_fraction * len(names)), round(val_fraction * len(names))
    pick = [names[i] for i in order]
    return {"test": pick[:n_test], "val": pick[n_test : n_test + n_val], "train": pick[n_test + n_val :]}
