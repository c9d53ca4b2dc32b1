"""Evaluation metrics: multilabel classification (macro AUROC / F1) and per-sample wave segmentation.

Classification metrics follow scikit-learn's definitions (``roc_auc_score`` with ties averaged, ``f1_score`` with
zero_division=0) and are tested against it. Segmentation metrics work on integer label arrays at a known rate:
Dice per class (= sample-level F1) and wave-boundary detection (onset / offset) with a tolerance in ms, matched by
the repo's one EC57 matcher (:func:`offline.scoring.match_pairs`).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from offline.scoring import match_pairs


def auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of one binary task (Mann-Whitney U); NaN when only one class is present."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y_true.sum()), int((~y_true).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Binary F1 = 2 TP / (2 TP + FP + FN); 0 when there is nothing to find and nothing found."""
    y_true, y_pred = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp = int((y_true & y_pred).sum())
    denom = 2 * tp + int((~y_true & y_pred).sum()) + int((y_true & ~y_pred).sum())
    return 2 * tp / denom if denom else 0.0


def multilabel_report(
    y_true: np.ndarray, score: np.ndarray, thresholds: np.ndarray, class_names: tuple[str, ...]
) -> dict:
    """Per-class and macro AUROC / F1 for (n, c) labels and scores (probabilities) with per-class thresholds.

    Macro AUROC averages over classes where it is defined (both labels present) and says how many those were.
    """
    aucs = [auroc(y_true[:, j], score[:, j]) for j in range(y_true.shape[1])]
    f1s = [f1(y_true[:, j], score[:, j] >= thresholds[j]) for j in range(y_true.shape[1])]
    defined = [a for a in aucs if not np.isnan(a)]
    return {
        "macro_auroc": float(np.mean(defined)) if defined else float("nan"),
        "auroc_classes_defined": len(defined),
        "macro_f1": float(np.mean(f1s)),
        "per_class": {name: {"auroc": a, "f1": f} for name, a, f in zip(class_names, aucs, f1s, strict=True)},
    }


def tune_thresholds(y_true: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Per-class threshold maximising F1 on (validation) data; 0.5 where a class has no positive."""
    out = np.full(y_true.shape[1], 0.5)
    for j in range(y_true.shape[1]):
        if y_true[:, j].sum() == 0:
            continue
        candidates = np.unique(score[:, j])
        best = max(candidates, key=lambda t, j=j: f1(y_true[:, j], score[:, j] >= t))
        out[j] = float(best)
    return out


def dice(ref: np.ndarray, pred: np.ndarray, cls: int) -> tuple[int, int, int]:
    """(tp, fp, fn) sample counts of one class; Dice = 2 tp / (2 tp + fp + fn), pooled over records by the caller."""
    r, p = ref == cls, pred == cls
    return int((r & p).sum()), int((~r & p).sum()), int((r & ~p).sum())


def waves(labels: np.ndarray, cls: int, min_len: int = 1) -> np.ndarray:
    """(k, 2) [onset, offset] sample indices (offset inclusive) of runs of ``cls`` at least ``min_len`` long."""
    on = np.flatnonzero(np.diff(np.r_[0, (labels == cls).astype(np.int8), 0]) == 1)
    off = np.flatnonzero(np.diff(np.r_[0, (labels == cls).astype(np.int8), 0]) == -1) - 1
    keep = off - on + 1 >= min_len
    return np.stack([on[keep], off[keep]], axis=1) if keep.any() else np.zeros((0, 2), dtype=int)


def match_points(ref: np.ndarray, pred: np.ndarray, tolerance: int) -> tuple[int, int, int, np.ndarray]:
    """One-to-one matching of point sets within ``tolerance`` samples, by :func:`offline.scoring.match_pairs`.

    Returns:
        (tp, fp, fn, errors) where errors are pred - ref (samples) of the matched pairs.
    """
    ri, pi = match_pairs(ref, pred, tolerance)
    tp = len(ri)
    return tp, len(pred) - tp, len(ref) - tp, (np.asarray(pred)[pi] - np.asarray(ref)[ri]).astype(float)


def segmentation_report(
    refs: list[np.ndarray],
    preds: list[np.ndarray],
    spans: list[tuple[int, int]],
    class_names: tuple[str, ...],
    fs_hz: float,
    tolerance_ms: float = 150.0,
    min_wave_ms: float = 0.0,
) -> dict:
    """Dice and boundary metrics for per-sample labels, scored only inside each reference's annotated span.

    Args:
        refs, preds: per-lead integer label arrays (same length pairwise); class 0 is background, negative
            reference labels are ignored.
        spans: [first, last] annotated sample (inclusive) of each reference.
        tolerance_ms: a predicted onset/offset matches a reference one within this distance.
        min_wave_ms: predicted waves shorter than this are ignored for boundary scoring.

    Returns:
        {class: {dice, onset: {f1, precision, recall, err_mean_ms, err_sd_ms}, offset: {...}}, "mean_dice": ...}.
    """
    tol = int(round(tolerance_ms * fs_hz / 1000))
    min_len = max(1, int(round(min_wave_ms * fs_hz / 1000)))
    out: dict = {}
    for cls in range(1, len(class_names)):
        counts = np.zeros(3, dtype=np.int64)
        bounds = {"onset": [np.zeros(3, dtype=np.int64), []], "offset": [np.zeros(3, dtype=np.int64), []]}
        for ref, pred, (lo, hi) in zip(refs, preds, spans, strict=True):
            r, p = ref[lo : hi + 1], pred[lo : hi + 1]
            scored = r >= 0  # negative reference labels mark samples to ignore
            counts += dice(r[scored], p[scored], cls)
            rw, pw = waves(r, cls), waves(p, cls, min_len)
            for k, name in enumerate(("onset", "offset")):
                tp, fp, fn, err = match_points(rw[:, k], pw[:, k], tol)
                bounds[name][0] += (tp, fp, fn)
                bounds[name][1].append(err)
        tp, fp, fn = counts
        entry: dict = {"dice": float(2 * tp / max(1, 2 * tp + fp + fn))}
        for name, (c, errs) in bounds.items():
            btp, bfp, bfn = (int(v) for v in c)
            err_ms = np.concatenate(errs) * 1000.0 / fs_hz if errs else np.zeros(0)
            entry[name] = {
                "f1": 2 * btp / max(1, 2 * btp + bfp + bfn),
                "precision": btp / max(1, btp + bfp),
                "recall": btp / max(1, btp + bfn),
                "err_mean_ms": float(err_ms.mean()) if err_ms.size else float("nan"),
                "err_sd_ms": float(err_ms.std()) if err_ms.size else float("nan"),
                "n_ref": btp + bfn,
            }
        out[class_names[cls]] = entry
    out["mean_dice"] = float(np.mean([out[c]["dice"] for c in class_names[1:]]))
    out["mean_boundary_f1"] = float(np.mean([out[c][b]["f1"] for c in class_names[1:] for b in ("onset", "offset")]))
    return out
