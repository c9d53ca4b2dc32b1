"""Beat-by-beat scoring of QRS detections against reference annotations (ANSI/AAMI EC57 style)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: MIT-BIH annotation symbols that mark a beat (all other symbols are rhythm, noise or wave marks).
BEAT_SYMBOLS: frozenset[str] = frozenset("NLRBAaJSVrFejnE/fQ?")
#: EC57's beat match window: a detection within ± this of a reference beat is that beat (s).
BEAT_MATCH_WINDOW_S = 0.15


def beat_samples(samples: np.ndarray, symbols: Sequence[str]) -> np.ndarray:
    """The sample indices of the beat annotations (symbols in :data:`BEAT_SYMBOLS`), as int64."""
    keep = np.fromiter((s in BEAT_SYMBOLS for s in symbols), dtype=bool, count=len(symbols))
    return np.asarray(samples, dtype=np.int64)[keep]


def match_pairs(ref_samples: np.ndarray, test_samples: np.ndarray, tol_samples: float) -> tuple[np.ndarray, np.ndarray]:
    """Pair test points with reference points one-to-one (the EC57 beat-by-beat rule; the one matcher of the repo).

    Rule: the reference points are taken in time order; each takes the nearest test point within
    ``± tol_samples`` that is later than the test point taken by the reference before it (greedy nearest match,
    each reference and each test point used at most once, pairs never cross). Ties go to the earlier test point.

    Parameters
    ----------
    ref_samples, test_samples
        Reference and test positions (samples, same sampling), in any order.
    tol_samples
        Match window half-width (samples); 150 ms is the EC57 standard for beats.

    Returns
    -------
    ref_index, test_index
        int64 indices into ``ref_samples`` and ``test_samples`` of the matched pairs, in time order.
    """
    ref = np.asarray(ref_samples, dtype=np.int64)
    test = np.asarray(test_samples, dtype=np.int64)
    ref_order = np.argsort(ref, kind="stable")
    test_order = np.argsort(test, kind="stable")
    t = test[test_order].tolist()
    ref_idx, test_idx = [], []
    j = 0  # first test point not yet taken nor passed
    for i in ref_order.tolist():
        r = int(ref[i])
        while j < len(t) and t[j] < r - tol_samples:
            j += 1
        best = -1
        k = j
        while k < len(t) and t[k] <= r + tol_samples:
            if best < 0 or abs(t[k] - r) < abs(t[best] - r):
                best = k
            k += 1
        if best >= 0:
            ref_idx.append(i)
            test_idx.append(int(test_order[best]))
            j = best + 1
    return np.asarray(ref_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)


def match_beats(ref_samples: np.ndarray, test_samples: np.ndarray, tol_samples: float) -> tuple[int, int, int]:
    """Counts of :func:`match_pairs` (same arguments): ``(tp, fn, fp)`` = matched pairs, unmatched reference
    beats, unmatched detections."""
    tp = len(match_pairs(ref_samples, test_samples, tol_samples)[0])
    return tp, len(ref_samples) - tp, len(test_samples) - tp


def pair_beats(ref_samples: np.ndarray, test_samples: np.ndarray, tol_samples: float) -> np.ndarray:
    """For each test point, the index of the reference point :func:`match_pairs` pairs it with, or -1 when none
    does (same arguments; one-to-one, within ``± tol_samples``).

    Returns:
        int64 array of ``len(test_samples)`` indices into ``ref_samples`` (-1: unmatched).
    """
    ref_idx, test_idx = match_pairs(ref_samples, test_samples, tol_samples)
    out = np.full(len(test_samples), -1, dtype=np.int64)
    out[test_idx] = ref_idx
    return out
