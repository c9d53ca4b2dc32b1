"""Beat-by-beat scoring of QRS detections against reference annotations (ANSI/AAMI EC57 style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: MIT-BIH annotation symbols that mark a beat (all other symbols are rhythm, noise or wave marks).
BEAT_SYMBOLS: frozenset[str] = frozenset("NLRBAaJSVrFejnE/fQ?")


def beat_samples(samples: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
    """The sample indices of the beat annotations (symbols in :data:`BEAT_SYMBOLS`), as int64."""
    keep = np.fromiter((s in BEAT_SYMBOLS for s in symbols), dtype=bool, count=len(symbols))
    return np.asarray(samples, dtype=np.int64)[keep]


def match_beats(ref_samples: np.ndarray, test_samples: np.ndarray, tol_samples: float) -> tuple[int, int, int]:
    """Match detections to reference beats one-to-one within ``tol_samples``.

    Each reference beat, in time order, takes the nearest detection not yet taken within ``± tol_samples``.

    Parameters
    ----------
    ref_samples, test_samples
        Reference and detected beat indices (samples, same sampling).
    tol_samples
        Match window half-width (samples); 150 ms is the EC57 standard.

    Returns
    -------
    tp, fn, fp
        Matched pairs, unmatched reference beats, unmatched detections.
    """
    ref = np.sort(np.asarray(ref_samples, dtype=np.int64))
    test = np.sort(np.asarray(test_samples, dtype=np.int64))
    tp = 0
    j = 0  # first detection not yet taken nor passed
    for r in ref.tolist():
        while j < test.size and test[j] < r - tol_samples:
            j += 1
        best = -1
        k = j
        while k < test.size and test[k] <= r + tol_samples:
            if best < 0 or abs(int(test[k]) - r) < abs(int(test[best]) - r):
                best = k
            k += 1
        if best >= 0:
            tp += 1
            j = best + 1
    return tp, int(ref.size) - tp, int(test.size) - tp
