"""WFDB wave marks (QTDB ``.q1c``, LUDB ``.i`` … ``.v6``) parsed into P waves, QRS complexes and T waves.

The one parser of the ``(`` onset, ``p`` / ``N`` / ``t`` peak, ``)`` offset convention, used by the simulator's truth
messages (:mod:`simulator.truth`) and by the training labels (:mod:`train.data.ludb`). Positions stay in samples of
whatever sampling the marks are given in; callers convert to seconds or rescale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge.ecg import LEADS_12

#: LUDB's per-lead annotation extensions (lower-case lead names, ``.i`` … ``.v6``), in LEADS_12 order.
LUDB_EXTENSIONS: tuple[str, ...] = tuple(lead.lower() for lead in LEADS_12)
#: Peak symbols of WFDB wave annotations → wave names.
WAVE_OF_PEAK: dict[str, str] = {"p": "P", "N": "QRS", "t": "T"}


@dataclass(frozen=True)
class WaveMark:
    """One marked wave, positions in samples.

    Attributes:
        wave: ``"P"``, ``"QRS"`` or ``"T"``.
        peak: the peak mark (samples).
        on, off: the onset / offset mark, or None when the mark next to the peak is not ``(`` / ``)``.
        before, after: the marks next to the peak whatever their symbol (None at the ends of the file): an open
            wave lies somewhere between them.
    """

    wave: str
    peak: int
    on: int | None
    off: int | None
    before: int | None
    after: int | None


def wave_marks(samples: np.ndarray, symbols: Sequence[str]) -> list[WaveMark]:
    """Turn WFDB wave marks into :class:`WaveMark` objects, in file order.

    A boundary counts only when it is adjacent to its peak; a missing one is None (LUDB leaves 134 peaks open).

    Args:
        samples: mark positions (samples), in file order; symbols: their symbols (same length).
    """
    out = []
    last = len(symbols) - 1
    for i, sym in enumerate(symbols):
        if sym not in WAVE_OF_PEAK:
            continue
        before = int(samples[i - 1]) if i > 0 else None
        after = int(samples[i + 1]) if i < last else None
        out.append(WaveMark(
            wave=WAVE_OF_PEAK[sym], peak=int(samples[i]),
            on=before if i > 0 and symbols[i - 1] == "(" else None,
            off=after if i < last and symbols[i + 1] == ")" else None,
            before=before, after=after))
    return out
