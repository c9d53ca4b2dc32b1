"""AAMI beat classification: the inter-patient split, the RR features, the task, the shipped engine (real records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ
from edge.interpret.rr_features import FEATURE_NAMES, RRContext, rr_features
from train import config
from train.data import mitdb
from train.tasks import held_out

#: engines/beat-cls on DS2 record 100's reference beats: N recall measured 1.000 (2237 / 2237), S 32 / 33.
N_RECALL_100 = 0.98
S_RECALL_100 = 0.85


def test_ds1_ds2_protocol_lists() -> None:
    assert len(mitdb.DS1) == len(mitdb.DS2) == 22
    assert not set(mitdb.DS1) & set(mitdb.DS2)
    assert set(mitdb.TRAIN_RECORDS) | set(mitdb.VAL_RECORDS) == set(mitdb.DS1)
    assert not set(mitdb.TRAIN_RECORDS) & set(mitdb.VAL_RECORDS)
    assert "104" not in mitdb.DS1 + mitdb.DS2  # paced: outside the protocol


def test_pretraining_for_beats_excludes_every_ds2_subject(data_dir: Path) -> None:
    cfg = config.load("cpu-fast-pretrain-beats", {"data": {"root": str(data_dir)}})
    out = held_out(cfg)
    for name in mitdb.DS2:
        assert data_dir / "mitdb" / name in out
        assert data_dir / "qtdb" / f"sel{name}" in out
    ds2_excerpts = [p.with_suffix("") for p in (data_dir / "qtdb").glob("sel*.hea") if p.stem[3:] in mitdb.DS2]
    assert len(ds2_excerpts) == 6 and set(ds2_excerpts) <= out  # sel100 103 117 123 213 221 are here
    assert data_dir / "mitdb" / "101" not in out  # DS1 stays in


def test_rr_features_batch_equals_streaming_on_a_real_record(data_dir: Path) -> None:
    rec = mitdb.read_beats(data_dir / "mitdb" / "201")  # AF, aberrant beats, pauses: > 5 min of beats
    batch = rr_features(rec.r_times_s)
    ctx = RRContext()
    rows = [f for f in (ctx.push(t) for t in rec.r_times_s) if f is not None]
    rows.append(ctx.flush())
    assert batch.shape == (len(rec.r_times_s), len(FEATURE_NAMES))
    np.testing.assert_array_equal(np.stack(rows), batch)  # exactly, not approximately
    assert ctx.count == 0 and ctx.times == []  # flush resets
    pre, post = batch[:, 0], batch[:, 1]
    np.testing.assert_allclose(pre[1:], np.diff(rec.r_times_s))
    np.testing.assert_allclose(post[:-1], np.diff(rec.r_times_s))


def test_rr_features_short_series_and_bad_times() -> None:
    np.testing.assert_array_equal(rr_features(np.array([3.0])), [[0.8, 0.8, 0.8, 0.8, 1.0, 1.0, 1.0, 1.0]])
    f = rr_features(np.array([0.0, 1.0, 1.5]))
    np.testing.assert_allclose(f[:, 0], [1.0, 1.0, 0.5])  # pre: the first beat takes its post-RR
    np.testing.assert_allclose(f[:, 1], [1.0, 0.5, 0.5])  # post: the last beat takes its pre-RR
    np.testing.assert_allclose(f[:, 2], [1.0, 1.0, 0.75])  # local mean of the intervals so far
    with pytest.raises(ValueError):
        rr_features(np.array([1.0, 1.0]))
    ctx = RRContext()
    ctx.push(1.0)
    with pytest.raises(ValueError):
        ctx.push(0.5)


def test_read_beats_lead_rate_and_paced_record(data_dir: Path) -> None:
    rec = mitdb.read_beats(data_dir / "mitdb" / "114")  # leads swapped: MLII is the second channel
    assert rec.lead == "MLII"
    assert len(rec.signal_mv) == pytest.approx(650000 * INTERNAL_FS_HZ / 360, abs=10)
    paced = mitdb.read_beats(data_dir / "mitdb" / "104")  # no MLII: V5; paced beats are Q
    assert paced.lead == "V5"
    counts = np.bincount(paced.labels, minlength=len(AAMI_CLASSES))
    assert counts[AAMI_CLASSES.index("Q")] == 2064


def test_beat_task_refuses_ds2_in_training_or_validation(data_dir: Path) -> None:
    from train.tasks import BeatClassifyTask

    cfg = config.load("cpu-small-finetune-beats", {"data": {"root": str(data_dir)}})
    with pytest.raises(ValueError, match="DS1"):
        BeatClassifyTask(cfg, train_records=("101", "100"), val_records=("118",))
    with pytest.raises(ValueError, match="DS1"):
        BeatClassifyTask(cfg, train_records=("101",), val_records=("232",))
    with pytest.raises(ValueError, match="DS1"):
        BeatClassifyTask(cfg, train_records=("101",), val_records=("101",))


def test_tiny_finetune_writes_a_checkpoint_whose_engine_loads(data_dir: Path, tmp_path: Path) -> None:
    from edge.inference import load_engine
    from train.checkpoint import read_checkpoint
    from train.engine_build import build_engine
    from train.loop import fit
    from train.tasks import BeatClassifyTask

    overrides = {
        "data": {"root": str(data_dir), "label_fraction": 0.3},
        "optim": {"epochs": 1, "batch_size": 256, "max_minutes": 2.0},
        "run": {"out_dir": str(tmp_path / "run"), "resume": False, "device": "cpu"},
    }
    cfg = config.load("cpu-small-finetune-beats", overrides)
    task = BeatClassifyTask(cfg, train_records=("101", "106"), val_records=("118",), test_records=("100",))
    assert task.parts == {"train": ["101", "106"], "val": ["118"], "test": ["100"]}
    fit(cfg, task)
    meta = read_checkpoint(tmp_path / "run" / "model.pt")["meta"]
    assert meta["split"] == task.parts and not set(meta["split"]["train"] + meta["split"]["val"]) & set(mitdb.DS2)
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["class_names"] == list(AAMI_CLASSES)
    assert max(meta["thresholds"]) == 1.0  # tuned on val, scaled into (0, 1]
    build_engine(tmp_path / "run" / "model.pt", tmp_path / "engine", data_dir=data_dir)
    engine = load_engine(tmp_path / "engine", backend="onnxruntime", threads=1)
    rec = mitdb.read_beats(data_dir / "mitdb" / "100")
    m = engine.manifest
    windows, inside = mitdb.beat_windows(rec.signal_mv, rec.r_samples[:64], m.r_offset_samples, m.window_samples)
    logits = engine.infer(windows[:, None], features=rr_features(rec.r_times_s)[:64][inside].astype(np.float32))
    assert logits.shape == (int(inside.sum()), len(AAMI_CLASSES)) and np.isfinite(logits).all()


def test_shipped_engine_classifies_record_100_reference_beats(data_dir: Path) -> None:
    from edge.inference import load_engine, to_probabilities
    from edge.interpret.beat_class import decide
    from train.beat_metrics import confusion

    engine = load_engine(Path(__file__).resolve().parent.parent / "engines" / "beat-cls", "onnxruntime", threads=1)
    m = engine.manifest
    assert m.task == "beat-classify" and m.feature_names == FEATURE_NAMES and m.class_names == AAMI_CLASSES
    rec = mitdb.read_beats(data_dir / "mitdb" / "100")  # DS2: mostly N, 33 A, 1 V
    windows, inside = mitdb.beat_windows(rec.signal_mv, rec.r_samples, m.r_offset_samples, m.window_samples)
    features = rr_features(rec.r_times_s)[inside].astype(np.float32)
    probs = to_probabilities(engine.infer(windows[:, None], features=features), m.activation)
    pred = decide(probs, np.array([m.thresholds[c] for c in m.class_names]))
    matrix = confusion(rec.labels[inside], pred)
    n = AAMI_CLASSES.index("N")
    assert matrix[n, n] / matrix[n].sum() >= N_RECALL_100
    s = AAMI_CLASSES.index("S")
    assert matrix[s, s] / matrix[s].sum() >= S_RECALL_100
