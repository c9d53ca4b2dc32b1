"""Metrics against scikit-learn on fixed input, and boundary matching by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from train.metrics import auroc, f1, match_points, multilabel_report, segmentation_report, waves


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((200, 5)) < [0.5, 0.3, 0.2, 0.1, 0.05]).astype(int)
    s = np.round(np.clip(y * 0.3 + rng.random((200, 5)), 0, 1), 2)  # rounded: ties occur
    thresholds = np.array([0.5, 0.6, 0.4, 0.5, 0.7])
    report = multilabel_report(y, s, thresholds, ("a", "b", "c", "d", "e"))
    assert report["macro_auroc"] == pytest.approx(roc_auc_score(y, s, average="macro"), abs=1e-12)
    assert report["macro_f1"] == pytest.approx(f1_score(y, s >= thresholds, average="macro", zero_division=0))
    for j in range(5):
        assert auroc(y[:, j], s[:, j]) == pytest.approx(roc_auc_score(y[:, j], s[:, j]))
        assert f1(y[:, j], s[:, j] > 0.5) == pytest.approx(f1_score(y[:, j], s[:, j] > 0.5))
    assert np.isnan(auroc(np.zeros(4), np.arange(4)))


def test_dice_matches_sklearn_f1_per_class() -> None:
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 4, 1000)
    pred = np.where(rng.random(1000) < 0.8, ref, rng.integers(0, 4, 1000))
    report = segmentation_report([ref], [pred], [(0, 999)], ("none", "P", "QRS", "T"), fs_hz=250.0)
    sk = f1_score(ref, pred, labels=[1, 2, 3], average=None)
    for cls, name in enumerate(("P", "QRS", "T"), start=1):
        assert report[name]["dice"] == pytest.approx(sk[cls - 1])


def test_boundary_scoring_by_hand() -> None:
    np.testing.assert_array_equal(waves(np.array([0, 2, 2, 0, 2, 0, 2, 2, 2]), 2, min_len=2), [[1, 2], [6, 8]])
    tp, fp, fn, err = match_points(np.array([10, 50, 90]), np.array([12, 47, 200]), tolerance=5)
    assert (tp, fp, fn) == (2, 1, 1)
    np.testing.assert_array_equal(np.sort(err), [-3, 2])
    # The EC57 rule of offline.scoring (the one matcher): references in time order take their nearest free point, so
    # the point at 16 goes to the reference at 10 (error +6), not to the nearer one at 20 (error -4).
    tp, fp, fn, err = match_points(np.array([10, 20]), np.array([16]), tolerance=10)
    assert (tp, fp, fn) == (1, 0, 1) and err.tolist() == [6.0]
    # One QRS from 100 to 119 at 250 Hz, predicted 2 samples late on both sides; scored inside [50, 199] only.
    ref, pred = np.zeros(300, int), np.zeros(300, int)
    ref[100:120] = 2
    pred[102:122] = 2
    pred[250:260] = 2  # outside the annotated span: not scored
    r = segmentation_report([ref], [pred], [(50, 199)], ("none", "P", "QRS", "T"), fs_hz=250.0)
    assert r["QRS"]["onset"]["f1"] == 1.0 and r["QRS"]["offset"]["f1"] == 1.0
    assert r["QRS"]["onset"]["err_mean_ms"] == pytest.approx(8.0)
    assert r["QRS"]["dice"] == pytest.approx(2 * 18 / (2 * 18 + 2 + 2))
