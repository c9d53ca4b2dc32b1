"""Dataset readers on the real files in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.ecg import LEADS_12, PTBXL_SUPERCLASSES, WAVE_CLASSES
from train.data import ludb, ptbxl
from train.data.rate import read_12_lead


def test_ludb_marks_become_per_sample_labels_at_250_hz(data_dir: Path) -> None:
    rec = ludb.load_record(data_dir / "ludb", "1")
    assert rec.signal_mv.shape == (12, 2500) and rec.labels.shape == (12, 2500)
    ii = rec.labels[LEADS_12.index("II")]
    # SOURCE.md: lead ii starts (644 '(') (662 'N') (682 ')') at 500 Hz -> QRS over samples 322..341 at 250 Hz.
    assert (ii[322:342] == WAVE_CLASSES.index("QRS")).all()
    assert ii[321] != WAVE_CLASSES.index("QRS") and ii[342] != WAVE_CLASSES.index("QRS")
    assert rec.spans[LEADS_12.index("II"), 0] == 322
    assert set(np.unique(rec.labels)) <= {ludb.IGNORE, 0, 1, 2, 3}


def test_missing_boundary_is_ignored_not_labelled() -> None:
    samples = np.array([10, 20, 30, 50, 60])
    labels, span = ludb.wave_labels(samples, ["(", "N", ")", "t", ")"], 100)  # the T wave has no onset
    assert (labels[10:31] == WAVE_CLASSES.index("QRS")).all()
    assert (labels[31:60] == ludb.IGNORE).all() and span == (10, 60)


def test_ludb_split_is_by_record_and_disjoint(data_dir: Path) -> None:
    names = ludb.record_names(data_dir / "ludb")
    parts = ludb.split(names, seed=0, test_fraction=0.2, val_fraction=0.1)
    assert sorted(parts["train"] + parts["val"] + parts["test"], key=int) == sorted(names, key=int)
    assert len(parts["test"]) == 32 and not set(parts["test"]) & set(parts["train"])
    assert parts == ludb.split(names, seed=0, test_fraction=0.2, val_fraction=0.1)


def test_ptbxl_superclasses_and_folds(data_dir: Path) -> None:
    rows = {r.ecg_id: r for r in ptbxl.read_index(data_dir / "ptbxl")}
    assert len(rows) == 10 and rows[6000].path.parent.parent.name == "records500"
    label = {i: {c for c, v in zip(PTBXL_SUPERCLASSES, rows[i].labels, strict=True) if v} for i in rows}
    assert label[6001] == {"STTC"} and label[6002] == {"NORM", "CD"}  # as SOURCE.md lists
    assert sum("NORM" in v for v in label.values()) == 9
    assert [r.ecg_id for r in ptbxl.rows_for(list(rows.values()), "test")] == [6000, 6004]
    assert read_12_lead(rows[6000].path).shape == (12, 2500)
