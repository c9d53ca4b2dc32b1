"""The dominant-beat veto on V calls (edge.interpret.beat_class): a beat whose QRS is the patient's dominant one is
not ventricular, unless V beats are common lately."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edge.interpret.beat_class import (
    VETO_V_SHARE,
    RecentVCalls,
    matches_dominant,
    veto_ventricular,
)
from edge.interpret.beat_morphology import NEUTRAL
from edge.pipeline.runner import run_recording
from offline.records import read_record

CLASSES = ("N", "S", "V", "F", "Q")
THRESHOLDS = np.array([1.0, 0.4, 0.126, 1.0, 1.0])
SAME = np.array([0.99, 0.0, 0.04, 0.6, 0.6])  # qrs_corr, qrs_amp_log2, qrs_diff, p_corr, dominant_share
OTHER = np.array([0.55, 0.7, 0.5, 0.3, 0.6])


def test_232_premature_beats_with_the_dominant_qrs_are_not_ventricular(data_dir: Path, edge_engines) -> None:
    """Before: the whole pipeline published 125 V beats on MIT-BIH 232, which has none (its S beats followed by a
    pause, QRS the dominant one); measured after: 80."""
    plan, engines = edge_engines
    rec = read_record(data_dir / "mitdb" / "232")
    out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)
    classes = Counter(b.get("class") for b in out["beats"])
    assert classes["V"] <= 90, classes
    assert classes["S"] >= 590, classes  # the vetoed beats mostly go to S (573 before, 599 after)


def test_a_vt_run_on_223_is_not_broken(data_dir: Path, edge_engines) -> None:
    """Before (the veto without its after-a-V condition): the 6th beat of 223's VT run at 1043.2 s (V probability
    0.50, QRS matching the dominant template) was published N, which broke the run and delayed the vt alarm from
    3.74 to 6.07 s after the onset."""
    plan, engines = edge_engines
    rec = read_record(data_dir / "mitdb" / "223")
    out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan)
    run = [b["class"] for b in out["beats"] if 1043.4 <= b["time"] <= 1048.5]
    assert run == ["V"] * 10, run


def test_the_veto_spares_v_when_v_is_common_or_the_qrs_differs() -> None:
    n = 80
    probs = np.tile([0.5, 0.3, 0.2, 0.0, 0.0], (n, 1))  # V by its threshold: 0.2 / 0.126 > 0.3 / 0.4 > 0.5 / 1
    classes = np.full(n, 2)
    morph = np.tile(SAME, (n, 1))
    # V calls every beat: the share of V among the calls before reaches VETO_V_SHARE at once, and V stays
    out = veto_ventricular(classes, probs, THRESHOLDS, morph, CLASSES)
    calls = RecentVCalls()
    recent = np.array([calls.push(True)[0] for _ in range(n)])
    assert (out[recent >= VETO_V_SHARE] == 2).all() and (out[recent < VETO_V_SHARE] != 2).all()
    # isolated V calls among N: vetoed when the QRS matches, kept when it differs or when there is no template
    classes = np.where(np.arange(n) % 10 == 5, 2, 0)
    morph[np.arange(n) % 20 == 5] = OTHER
    morph[5] = NEUTRAL
    out = veto_ventricular(classes, probs, THRESHOLDS, morph, CLASSES)
    kept = (classes == 2) & (np.arange(n) % 20 == 5)
    assert (out[kept] == 2).all()
    assert (out[(classes == 2) & ~kept] == 1).all()  # the best other class: S
    assert (out[classes == 0] == 0).all()


def test_matches_dominant_reads_the_morphology_columns() -> None:
    assert matches_dominant(np.stack([SAME, OTHER, NEUTRAL])).tolist() == [True, False, False]
