"""WFDB records and annotations at the I/O edge: files in, numpy arrays in mV out.

Used by the ``detect`` command, the simulator and training; DSP code never reads files itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from edge.ecg import canonical_lead

#: Physical units seen in WFDB headers (lower-cased), as the factor that converts them to mV.
_UNIT_TO_MV: dict[str, float] = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}
_WFDB_SUFFIXES = (".hea", ".dat", ".mat")


class RecordError(ValueError):
    """A WFDB record or annotation file that is missing, unreadable or unusable (message names the path)."""


@dataclass(frozen=True)
class Record:
    """One ECG record in memory.

    Attributes:
        name: record name (file stem, e.g. ``"100"``).
        signal_mv: samples in mV, shape ``(n_samples, n_leads)``, float32.
        fs_hz: sampling rate (Hz).
        leads: canonical lead names (:func:`edge.ecg.canonical_lead`), one per column of ``signal_mv``.
    """

    name: str
    signal_mv: np.ndarray = field(repr=False)
    fs_hz: float
    leads: tuple[str, ...]

    @property
    def n_samples(self) -> int:
        return int(self.signal_mv.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz


def _record_base(path: str | Path) -> Path:
    """The WFDB record path without extension (``…/100.hea`` and ``…/100`` both give ``…/100``)."""
    path = Path(path)
    return path.with_suffix("") if path.suffix.lower() in _WFDB_SUFFIXES else path


def read_record(path: str | Path, leads: Sequence[str] | None = None) -> Record:
    """Read a WFDB record (MIT-BIH, QTDB, LUDB, PTB-XL …) in physical units, converted to mV.

    Parameters
    ----------
    path
        Record path with or without the ``.hea`` extension, e.g. ``data/mitdb/100``.
    leads
        Lead names to keep, in this order (any spelling :func:`edge.ecg.canonical_lead` understands);
        ``None`` keeps all leads in file order.

    Returns
    -------
    Record
        ``signal_mv`` float32 ``(n_samples, n_leads)`` in mV.

    Raises
    ------
    RecordError
        The record is missing or unreadable, has non-voltage units or non-finite samples, or lacks a lead.
    """
    base = _record_base(path)
    try:
        rec = wfdb.rdrecord(str(base))
    except (OSError, ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
        raise RecordError(f"cannot read WFDB record {base}: {exc}") from exc
    if rec.p_signal is None or rec.p_signal.ndim != 2 or rec.p_signal.shape[0] == 0:
        raise RecordError(f"WFDB record {base} has no samples")
    scale = np.empty(rec.n_sig)
    for i, unit in enumerate(rec.units or ["mV"] * rec.n_sig):
        factor = _UNIT_TO_MV.get(str(unit or "mV").strip().lower())
        if factor is None:
            raise RecordError(f"WFDB record {base}: lead {rec.sig_name[i]!r} has non-voltage units {unit!r}")
        scale[i] = factor
    names = tuple(canonical_lead(name) for name in rec.sig_name)
    if leads is None:
        columns = list(range(rec.n_sig))
    else:
        wanted = [canonical_lead(name) for name in leads]
        missing = [name for name in wanted if name not in names]
        if missing:
            raise RecordError(f"WFDB record {base} has no lead {missing} (leads: {list(names)})")
        columns = [names.index(name) for name in wanted]
    signal = rec.p_signal[:, columns] * scale[columns]
    if not np.isfinite(signal).all():
        raise RecordError(f"WFDB record {base} has non-finite samples")
    return Record(
        name=base.name,
        signal_mv=signal.astype(np.float32),
        fs_hz=float(rec.fs),
        leads=tuple(names[c] for c in columns),
    )


def read_annotations(path: str | Path, extension: str = "atr") -> tuple[np.ndarray, list[str]]:
    """Read a WFDB annotation file.

    Parameters
    ----------
    path
        Record path with or without extension, e.g. ``data/mitdb/100``.
    extension
        Annotator extension (``"atr"``, ``"q1c"``, ``"i"`` …).

    Returns
    -------
    samples, symbols
        Sample indices (int64, in the record's own sampling) and the annotation symbols, in file order.

    Raises
    ------
    RecordError
        The annotation file is missing or unreadable.
    """
    base = _record_base(path)
    try:
        ann = wfdb.rdann(str(base), extension)
    except (OSError, ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
        raise RecordError(f"cannot read annotations {base}.{extension}: {exc}") from exc
    return np.asarray(ann.sample, dtype=np.int64), list(ann.symbol)
