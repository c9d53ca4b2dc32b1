"""AAMI beat classification: the decision rule on softmax probabilities and EC57-style scores (numpy only).

Decision: beat class = ``argmax_c p_c / t_c``, ``t`` the per-class thresholds of the engine (all 1: plain argmax;
``t_S < 1`` calls more beats S). Scores, from a confusion matrix of reference (rows) x predicted (columns) AAMI
classes, as ANSI/AAMI EC57 and de Chazal et al. 2004 count them: VEB sensitivity ``Se = TP / (TP + FN)`` over V
reference beats and positive predictivity ``+P = TP / (TP + FP)`` where fusion (F) and Q reference beats called V
are not false positives; SVEB the same over S with Q reference beats not counted as false positives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.ecg import AAMI_CLASSES
from edge.interpret.beat_class import decide

_N, _S, _V, _F, _Q = range(len(AAMI_CLASSES))
#: Reference label of a detection that matches no reference beat (the extra row of :func:`detection_confusion`).
NO_BEAT = len(AAMI_CLASSES)
#: Grid of the S and V thresholds searched by :func:`tune_thresholds` (dimensionless).
THRESHOLD_GRID = np.geomspace(0.02, 5.0, 49)


def confusion(reference: np.ndarray, predicted: np.ndarray, n_classes: int = len(AAMI_CLASSES)) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts, rows reference, columns predicted (labels < 0 are skipped)."""
    ref, pred = np.asarray(reference), np.asarray(predicted)
    keep = (ref >= 0) & (pred >= 0)
    return np.bincount(ref[keep] * n_classes + pred[keep], minlength=n_classes**2).reshape(n_classes, n_classes)


def detection_confusion(reference: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``(6, 5)`` int64 counts: :func:`confusion` of the reference beats plus a last row counting the detections
    labelled :data:`NO_BEAT` (matching no reference beat) by the class they got; :func:`ec57_scores` takes it."""
    ref, pred = np.asarray(reference), np.asarray(predicted)
    k = len(AAMI_CLASSES)
    extra = np.bincount(pred[(ref == NO_BEAT) & (pred >= 0)], minlength=k)
    return np.vstack([confusion(np.where(ref == NO_BEAT, -1, ref), pred), extra[None, :k]])


def _se_pp(tp: int, fn: int, fp: int) -> dict[str, Any]:
    return {
        "se": float(tp / (tp + fn)) if tp + fn else None,
        "pp": float(tp / (tp + fp)) if tp + fp else None,
        "tp": int(tp), "fn": int(fn), "fp": int(fp),
    }  # fmt: skip


def ec57_scores(matrix: np.ndarray) -> dict[str, Any]:
    """Gross VEB and SVEB Se / +P (fractions, None when undefined) and counts from a 5-class confusion matrix.

    The matrix may carry an extra last row (detections matching no reference beat) and an extra last column
    (reference beats no detection matched, "missed"): a missed V or S beat is a false negative, an unmatched
    detection called V or S a false positive.
    """
    m = np.asarray(matrix, dtype=np.int64)
    k = len(AAMI_CLASSES)
    extra_row = m.shape[0] > k
    veb_fp_rows = [_N, _S] + ([k] if extra_row else [])
    sveb_fp_rows = [_N, _V, _F] + ([k] if extra_row else [])
    veb = _se_pp(m[_V, _V], m[_V].sum() - m[_V, _V], m[veb_fp_rows, _V].sum())
    sveb = _se_pp(m[_S, _S], m[_S].sum() - m[_S, _S], m[sveb_fp_rows, _S].sum())
    scored = m[:k, :k]
    accuracy = np.trace(scored[:_Q, :_Q]) / max(1, scored[:_Q].sum())
    return {"veb": veb, "sveb": sveb, "accuracy_nsvf": float(accuracy), "reference_beats": int(m[:k].sum())}


def tune_thresholds(labels: np.ndarray, probabilities: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Per-class thresholds maximising F1(VEB) + F1(SVEB) on labelled beats (validation data only; a label
    :data:`NO_BEAT` is a detection matching no reference beat, a false positive of the class it gets).

    Coordinate search over :data:`THRESHOLD_GRID` for ``t_V`` then ``t_S`` (``rounds`` passes) with the other
    thresholds at 1; then all are divided by the largest (the decisions do not change), so they lie in (0, 1] as
    the engine manifest requires.
    """
    t = np.ones(len(AAMI_CLASSES))

    def objective(candidate: np.ndarray) -> float:
        scores = ec57_scores(detection_confusion(labels, decide(probabilities, candidate)))
        return sum(_f1(scores[key]) for key in ("veb", "sveb"))

    for _ in range(rounds):
        for c in (_V, _S):
            best = max(THRESHOLD_GRID, key=lambda v: objective(np.where(np.arange(len(t)) == c, v, t)))
            t[c] = best
    return t / t.max()


def _f1(s: dict[str, Any]) -> float:
    se, pp = s["se"] or 0.0, s["pp"] or 0.0
    return 2 * se * pp / (se + pp) if se + pp else 0.0
