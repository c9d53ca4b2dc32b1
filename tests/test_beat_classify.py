"""AAMI beat classification: the inter-patient split, the RR features, the task, the shipped engine (real records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ
from edge.interpret.beat_class import BEAT_FEATURE_NAMES, beat_features, feature_columns
from edge.interpret.beat_morphology import MORPHOLOGY_NAMES, NEUTRAL, DominantBeat, morphology_features
from edge.interpret.rr_features import FEATURE_NAMES, RRContext, rr_features
from offline.scoring import match_pairs
from train import config
from train.beat_metrics import NO_BEAT, confusion, detection_confusion, ec57_scores
from train.data import mitdb
from train.data.rate import rescale_samples
from train.tasks import held_out

#: engines/beat-cls on DS2 record 100's reference beats: N recall measured 1.000 (2237 / 2237), S 28 / 33.
N_RECALL_100 = 0.98
S_RECALL_100 = 0.80


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


def test_detected_beats_carry_the_matched_reference_class(data_dir: Path) -> None:
    path = data_dir / "mitdb" / "207"  # flutter: the detector finds 436 "beats" where the reference has none
    ref = mitdb.read_beats(path)
    det = mitdb.read_beats(path, "detected")
    assert det.signal_mv.shape == ref.signal_mv.shape and det.lead == ref.lead
    ref_idx, det_idx = match_pairs(np.round(ref.r_times_s * 360).astype(np.int64),
                                   np.round(det.r_times_s * 360).astype(np.int64), 0.15 * 360)  # fmt: skip
    np.testing.assert_array_equal(det.labels[det_idx], ref.labels[ref_idx])
    unmatched = np.setdiff1d(np.arange(len(det.labels)), det_idx)
    assert (det.labels[unmatched] == NO_BEAT).all() and len(unmatched) > 400
    assert len(ref_idx) >= 0.99 * len(ref.labels)  # the detector finds nearly every reference beat
    np.testing.assert_array_equal(det.r_samples, rescale_samples(np.round(det.r_times_s * 360).astype(np.int64), 360))
    with pytest.raises(ValueError, match="r_peaks"):
        mitdb.read_beats(path, "annotated")


def test_detection_confusion_counts_unmatched_detections_as_false_positives() -> None:
    n, s, v, q = (AAMI_CLASSES.index(c) for c in "NSVQ")
    reference = np.array([n, n, v, v, NO_BEAT, NO_BEAT, NO_BEAT, -1])
    predicted = np.array([n, v, v, n, v, q, s, v])
    m = detection_confusion(reference, predicted)
    assert m.shape == (len(AAMI_CLASSES) + 1, len(AAMI_CLASSES))
    np.testing.assert_array_equal(m[-1], [0, 1, 1, 0, 1])  # the extra row: what the non-beats were called
    scores = ec57_scores(m)
    assert scores["veb"] == {"se": 0.5, "pp": 1 / 3, "tp": 1, "fn": 1, "fp": 2}  # N called V, a non-beat called V
    assert scores["sveb"]["fp"] == 1 and scores["reference_beats"] == 4
    np.testing.assert_array_equal(detection_confusion(reference[:4], predicted[:4])[:-1],
                                  confusion(reference[:4], predicted[:4]))  # fmt: skip


def test_beat_task_refuses_ds2_in_training_or_validation(data_dir: Path) -> None:
    from train.tasks import BeatClassifyTask

    cfg = config.load("cpu-small-finetune-beats", {"data": {"root": str(data_dir)}})
    with pytest.raises(ValueError, match="DS1"):
        BeatClassifyTask(cfg, train_records=("101", "100"), val_records=("118",))
    with pytest.raises(ValueError, match="DS1"):
        BeatClassifyTask(cfg, train_records=("101",), val_records=("232",))
    with pytest.raises(ValueError, match="DS1"):
        BeatClassifyTask(cfg, train_records=("101",), val_records=("101",))


def test_beat_task_on_detected_beats_trains_non_beats_as_q(data_dir: Path) -> None:
    from train.tasks import BeatClassifyTask

    cfg = config.load("cpu-small-finetune-beats", {"data": {"root": str(data_dir), "beat_r_peaks": "detected"}})
    task = BeatClassifyTask(cfg, train_records=("207",), val_records=("118",), test_records=())
    counts = dict(zip(AAMI_CLASSES, task.class_counts.tolist(), strict=True))
    assert counts["Q"] > 400 and counts["V"] > 200  # 207's flutter "beats" are Q; its PVCs keep their class
    labels, _ = task.probabilities(task.model, "train")
    assert (labels == NO_BEAT).sum() == counts["Q"]  # scored as extra detections, not as Q reference beats
    bad = config.load("cpu-small-finetune-beats", {"data": {"root": str(data_dir), "beat_r_peaks": "atr"}})
    with pytest.raises(ValueError, match="beat_r_peaks"):
        BeatClassifyTask(bad, train_records=("207",), val_records=("118",), test_records=())


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
    assert meta["feature_names"] == list(BEAT_FEATURE_NAMES) and meta["class_names"] == list(AAMI_CLASSES)
    assert max(meta["thresholds"]) == 1.0  # tuned on val, scaled into (0, 1]
    build_engine(tmp_path / "run" / "model.pt", tmp_path / "engine", data_dir=data_dir)
    engine = load_engine(tmp_path / "engine", backend="onnxruntime", threads=1)
    rec = mitdb.read_beats(data_dir / "mitdb" / "100")
    m = engine.manifest
    windows, inside = mitdb.beat_windows(rec.signal_mv, rec.r_samples[:64], m.r_offset_samples, m.window_samples)
    feats = beat_features(rec.r_times_s, rec.signal_mv, rec.r_samples, INTERNAL_FS_HZ)[:64][inside]
    logits = engine.infer(windows[:, None], features=feats.astype(np.float32))
    assert logits.shape == (int(inside.sum()), len(AAMI_CLASSES)) and np.isfinite(logits).all()


def test_shipped_engine_classifies_record_100_reference_beats(data_dir: Path) -> None:
    from edge.inference import load_engine, to_probabilities
    from edge.interpret.beat_class import decide
    from train.beat_metrics import confusion

    engine = load_engine(Path(__file__).resolve().parent.parent / "engines" / "beat-cls", "onnxruntime", threads=1)
    m = engine.manifest
    assert m.task == "beat-classify" and m.feature_names == BEAT_FEATURE_NAMES and m.class_names == AAMI_CLASSES
    rec = mitdb.read_beats(data_dir / "mitdb" / "100")  # DS2: mostly N, 33 A, 1 V
    windows, inside = mitdb.beat_windows(rec.signal_mv, rec.r_samples, m.r_offset_samples, m.window_samples)
    features = beat_features(rec.r_times_s, rec.signal_mv, rec.r_samples, INTERNAL_FS_HZ)
    features = features[:, feature_columns(m.feature_names)][inside].astype(np.float32)
    probs = to_probabilities(engine.infer(windows[:, None], features=features), m.activation)
    pred = decide(probs, m.threshold_vector)
    matrix = confusion(rec.labels[inside], pred)
    n = AAMI_CLASSES.index("N")
    assert matrix[n, n] / matrix[n].sum() >= N_RECALL_100
    s = AAMI_CLASSES.index("S")
    assert matrix[s, s] / matrix[s].sum() >= S_RECALL_100


def test_dominant_beat_tells_pvcs_from_the_patients_own_beats(data_dir: Path) -> None:
    """119 (DS1, ventricular bigeminy and trigeminy): its PVCs differ in shape from the patient's dominant beat,
    its normal beats do not. 232 (DS2, mostly S beats): the S beats keep the dominant QRS (what tells them from V)."""
    rec = mitdb.read_beats(data_dir / "mitdb" / "119")
    f = morphology_features(rec.signal_mv, rec.r_samples, INTERNAL_FS_HZ)
    corr = f[:, MORPHOLOGY_NAMES.index("qrs_corr")]
    n, v = rec.labels == AAMI_CLASSES.index("N"), rec.labels == AAMI_CLASSES.index("V")
    assert n.sum() == 1543 and v.sum() == 444
    assert np.median(corr[n]) > 0.97 and np.mean(corr[n] > 0.9) > 0.95  # measured 0.99, 0.98
    assert np.median(corr[v]) < 0.8 and np.mean(corr[v] < 0.85) > 0.8  # measured 0.65, 0.98
    rec = mitdb.read_beats(data_dir / "mitdb" / "232")
    f = morphology_features(rec.signal_mv, rec.r_samples, INTERNAL_FS_HZ)
    s = rec.labels == AAMI_CLASSES.index("S")
    assert s.sum() == 1382 and np.median(f[s, MORPHOLOGY_NAMES.index("qrs_corr")]) > 0.97  # measured 0.99


def test_dominant_beat_streaming_rules() -> None:
    tracker = DominantBeat(INTERNAL_FS_HZ)
    before, after = tracker.span
    assert (before, after) == (75, 38)  # 0.30 s before, 0.15 s after R at 250 Hz
    t = np.arange(before + after) - before
    normal = np.exp(-0.5 * (t / 3.0) ** 2)  # a narrow QRS
    wide = -0.8 * np.exp(-0.5 * (t / 9.0) ** 2)  # a wide, inverted one
    np.testing.assert_array_equal(tracker.push(normal), NEUTRAL)  # nothing to compare with yet
    for _ in range(5):
        tracker.push(normal)
    f = tracker.push(wide)
    assert f[0] < 0 and f[2] > 0.5  # against the dominant narrow beat (measured -0.75, 0.65)
    for _ in range(6):  # as many wide beats as narrow ones: the dominant does not flip (hysteresis)
        tracker.push(wide)
    assert tracker.push(normal)[0] == pytest.approx(1.0)
    for _ in range(20):  # the wide beats take over
        tracker.push(wide)
    assert tracker.push(wide)[0] == pytest.approx(1.0) and len(tracker.templates) == 2
    with pytest.raises(ValueError, match="113 samples"):
        tracker.push(normal[:-1])
    tracker.reset()
    np.testing.assert_array_equal(tracker.push(wide), NEUTRAL)


def test_feature_columns_name_what_the_edge_computes() -> None:
    assert BEAT_FEATURE_NAMES == FEATURE_NAMES + MORPHOLOGY_NAMES
    np.testing.assert_array_equal(feature_columns(["qrs_corr", "pre_rr_s"]), [8, 0])
    with pytest.raises(ValueError, match="no beat feature named 'qrs_width'"):
        feature_columns(["pre_rr_s", "qrs_width"])


def test_edge_beat_features_equal_the_batch_features(data_dir: Path) -> None:
    """What the live pipeline gives the classifier for each detected beat (RR context one beat late, morphology
    learnt beat by beat) is what training computes over the whole series: the same numbers, to float32."""
    from edge.inference import load_engine
    from edge.pipeline.device_inference import InferencePlan
    from edge.pipeline.runner import run_recording
    from offline.records import read_record

    engine = load_engine(Path(__file__).resolve().parent.parent / "engines" / "beat-cls", "onnxruntime", threads=1)
    seen: list[np.ndarray] = []

    class Noting:
        """The real engine; the feature rows it is given are noted."""

        manifest = engine.manifest

        def infer(self, x: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
            seen.append(features[0].copy())
            return engine.infer(x, features)

    rec = read_record(data_dir / "mitdb" / "119")  # bigeminy: the dominant-beat state matters
    n = int(120 * rec.fs_hz)
    plan = InferencePlan(fs_hz=INTERNAL_FS_HZ, beat=engine.manifest)
    beats = run_recording(rec.signal_mv[:n], rec.fs_hz, rec.leads, {"beat-classify": Noting()}, plan)["beats"]
    assert len(beats) > 120 and len(seen) == len(beats)  # 130 beats in 2 min
    lead = rec.leads.index("MLII")
    signal = mitdb.to_internal(rec.signal_mv[:n, lead], rec.fs_hz)
    r = np.round(np.array([b["sample"] for b in beats]) * INTERNAL_FS_HZ / rec.fs_hz).astype(np.int64)
    batch = beat_features(np.array([b["time"] for b in beats]), signal, r, INTERNAL_FS_HZ)
    batch = batch[:, feature_columns(engine.manifest.feature_names)]
    np.testing.assert_allclose(np.stack(seen), batch, rtol=1e-4, atol=1e-4)


def test_an_engine_asking_for_a_feature_the_edge_lacks_is_refused() -> None:
    import dataclasses

    from edge.inference import Manifest
    from edge.pipeline.device_inference import InferencePlan

    m = Manifest.load(Path(__file__).resolve().parent.parent / "engines" / "beat-cls")
    bad = dataclasses.replace(m, feature_names=m.feature_names[:-1] + ("qrs_width",))
    with pytest.raises(ValueError, match="no beat feature named 'qrs_width'"):
        InferencePlan(fs_hz=INTERNAL_FS_HZ, beat=bad)
    short = dataclasses.replace(m, r_offset_samples=40)  # the window no longer holds 0.3 s before R
    with pytest.raises(ValueError, match="morphology span"):
        InferencePlan(fs_hz=INTERNAL_FS_HZ, beat=short)


def test_pretraining_beat_classes_from_the_classifier_on_a_real_window(data_dir: Path) -> None:
    """loss.beat_classes: classifier labels each beat of a 10 s pretraining window with engines/beat-cls: a
    bigeminy window of 119 (DS1) comes out N V N V as annotated."""
    from train.beat_targets import load_beat_classifier, window_beat_classes

    engine = load_beat_classifier(Path(__file__).resolve().parent.parent / "engines" / "beat-cls")
    rec = mitdb.read_beats(data_dir / "mitdb" / "119")
    v = AAMI_CLASSES.index("V")
    t_v = rec.r_times_s[rec.labels == v]
    start = next(t for t in t_v if t > 60.0 and np.count_nonzero((t_v >= t) & (t_v < t + 8.0)) >= 4)  # bigeminy
    lo = int(round((start - 2.0) * INTERNAL_FS_HZ))
    window = rec.signal_mv[lo : lo + int(10 * INTERNAL_FS_HZ)]
    inside = (rec.r_samples >= lo) & (rec.r_samples < lo + len(window))
    got = window_beat_classes(engine, window, rec.r_samples[inside] - lo)
    want = rec.labels[inside]
    assert (want == v).sum() >= 4 and np.mean(got == want) >= 0.9
    with pytest.raises(ValueError, match="not an AAMI beat-classify engine"):
        load_beat_classifier(Path(__file__).resolve().parent.parent / "engines" / "wave-seg")
