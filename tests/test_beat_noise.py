"""The beat noise gate (edge.interpret.beat_noise) on real MIT-BIH records: noise and flutter waves become Q, the V
beats of a bigeminy stay V, and the live pipeline gates exactly the beats the batch form gates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.detection.beats import detect_record
from edge.dsp.resample import StreamingResampler
from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ, preferred_lead
from edge.inference.engine import to_probabilities
from edge.interpret.beat_class import beat_features, beat_unreadable, decide, feature_columns, gate_classes
from edge.interpret.beat_noise import span_samples, unreadable, unreadable_beats
from offline.records import read_record
from offline.scoring import match_pairs
from train.data import mitdb
from train.data.rate import rescale_samples

ENGINE = Path(__file__).resolve().parent.parent / "engines" / "beat-cls"
V = AAMI_CLASSES.index("V")
Q = AAMI_CLASSES.index("Q")


@pytest.fixture(scope="module")
def engine():  # noqa: ANN201 - the loaded Engine
    from edge.inference import load_engine

    return load_engine(ENGINE, "onnxruntime", threads=1)


def _gate_leads(signal_mv: np.ndarray, leads: tuple[str, ...], fs_hz: float) -> np.ndarray:
    """Both leads (mV at ``fs_hz``) at the internal rate, the classifier's first, as the edge's buffer holds them."""
    first = preferred_lead(leads)
    order = [first, *(i for i in range(len(leads)) if i != first)]
    return StreamingResampler(fs_hz, INTERNAL_FS_HZ, len(order)).push(np.asarray(signal_mv)[:, order])


def _edge_classes(engine, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """Edge R peaks of a whole record: (detection samples at the record's rate, ungated classes, gate, reference
    V samples)."""
    rec = read_record(path)
    beats = mitdb.read_beats(path)
    detected = detect_record(rec.signal_mv, rec.fs_hz)
    samples = np.array([b.sample for b in detected], dtype=np.int64)
    times = np.array([b.time_s for b in detected])
    r = rescale_samples(samples, rec.fs_hz)
    m = engine.manifest
    windows, inside = mitdb.beat_windows(beats.signal_mv, r, m.r_offset_samples, m.window_samples)
    feats = beat_features(times, beats.signal_mv, r, INTERNAL_FS_HZ)[:, feature_columns(m.feature_names)]
    pred = np.full(len(r), -1)
    logits = engine.infer(windows[:, None, :], features=feats.astype(np.float32)[inside])
    pred[inside] = decide(to_probabilities(logits, m.activation), m.threshold_vector)
    gate = beat_unreadable(times, _gate_leads(rec.signal_mv, rec.leads, rec.fs_hz), r, INTERNAL_FS_HZ)
    ref_v = np.round(beats.r_times_s[beats.labels == V] * rec.fs_hz).astype(np.int64)
    return samples, pred, gate, ref_v


def test_noise_in_108_is_gated(data_dir: Path, engine) -> None:  # noqa: ANN001
    """MIT-BIH 108 marks noise from 27.57 s to 29.22 s, with two reference beats in it (N at 27.68 s and 28.68 s).
    The detector finds three more "beats" there (27.98, 28.20, 28.42 s) that the classifier calls V: the gate makes
    them Q and leaves the two real beats alone."""
    samples, pred, gate, _ = _edge_classes(engine, data_dir / "mitdb" / "108")
    t = samples / 360.0
    stretch = (t > 27.57) & (t < 29.22)
    np.testing.assert_allclose(t[stretch], [27.66, 27.98, 28.20, 28.42, 28.66], atol=0.01)
    noise = stretch & (np.abs(t - 27.67) > 0.05) & (np.abs(t - 28.67) > 0.05)
    assert (pred[noise] == V).all() and gate[noise].all()
    assert not gate[stretch & ~noise].any()
    gated = gate_classes(pred, gate, AAMI_CLASSES)
    assert (gated[noise] == Q).all() and (gated[stretch & ~noise] == pred[stretch & ~noise]).all()
    assert gate.sum() == 27 and len(samples) == 1799  # measured: 27 of the record's 1799 detections gated


def test_bigeminy_v_beats_of_119_stay_v(data_dir: Path, engine) -> None:  # noqa: ANN001
    """All 444 reference V beats of MIT-BIH 119 (bigeminy) are detected and called V, with the gate as without."""
    samples, pred, gate, ref_v = _edge_classes(engine, data_dir / "mitdb" / "119")
    gated = gate_classes(pred, gate, AAMI_CLASSES)
    ref_idx, det_idx = match_pairs(ref_v, samples, 0.15 * 360)
    assert len(ref_v) == 444 and len(ref_idx) == 444
    assert int((pred[det_idx] == V).sum()) == 444
    assert int((gated[det_idx] == V).sum()) == 444
    assert not gate[det_idx].any()


def test_live_pipeline_gates_the_beats_the_batch_form_gates(data_dir: Path, engine) -> None:  # noqa: ANN001
    """The first 70 s of MIT-BIH 207 (two ventricular flutter episodes, 40.8-51.0 s and 54.9-60.4 s) through the live
    pipeline: every published class equals the batch decision (thresholds, then :func:`beat_unreadable` on the same
    samples), and the gate fires on the flutter waves."""
    from edge.pipeline.device_inference import InferencePlan
    from edge.pipeline.runner import run_recording

    logits: list[np.ndarray] = []

    class Noting:
        """The real engine; its outputs are noted, one request per beat in beat order."""

        manifest = engine.manifest

        def infer(self, x: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
            out = engine.infer(x, features)
            logits.append(out[0].copy())
            return out

    rec = read_record(data_dir / "mitdb" / "207")
    n = int(70 * rec.fs_hz)
    plan = InferencePlan(fs_hz=INTERNAL_FS_HZ, beat=engine.manifest)
    signal = np.asarray(rec.signal_mv[:n], dtype=np.float32)
    beats = run_recording(signal, rec.fs_hz, rec.leads, {"beat-classify": Noting()}, plan)["beats"]
    k = len(logits)  # the last beat's window never fills: published without a class
    assert k > 80 and len(beats) == k + 1 and beats[-1]["class"] is None
    m = engine.manifest
    pred = decide(to_probabilities(np.stack(logits), m.activation), m.threshold_vector)
    leads = _gate_leads(signal, rec.leads, rec.fs_hz)  # the samples the edge was given (float32)
    r = np.round(np.array([b["sample"] for b in beats]) * INTERNAL_FS_HZ / rec.fs_hz).astype(np.int64)
    gate = beat_unreadable(np.array([b["time"] for b in beats]), leads, r, INTERNAL_FS_HZ)
    gate = gate[:k]
    batch = gate_classes(pred, gate, m.class_names)
    live = np.array([m.class_names.index(b["class"]) for b in beats[:k]])
    np.testing.assert_array_equal(live, batch)
    t = np.array([b["time"] for b in beats[:k]])
    flutter = ((t > 40.8) & (t < 51.0)) | ((t > 54.9) & (t < 60.4))
    assert gate[flutter].sum() >= 15 and not gate[t < 38.0].any()
    assert ((live == Q) == gate).all()  # the engine itself calls none of these beats Q


def test_gate_rules_on_made_spans() -> None:
    """A flat span is unreadable; a clean spike is readable, on one lead and with a flat second lead."""
    before, after = span_samples(INTERNAL_FS_HZ)
    t = np.arange(-before, after) / INTERNAL_FS_HZ
    qrs = np.exp(-0.5 * (t / 0.012) ** 2)  # 1 mV, 12 ms sd: a QRS-like spike at R
    flat = np.zeros_like(t)
    assert unreadable(flat[:, None], 0.8, INTERNAL_FS_HZ)
    assert not unreadable(qrs[:, None], 0.8, INTERNAL_FS_HZ)
    assert not unreadable(np.stack([qrs, flat], axis=1), 0.3, INTERNAL_FS_HZ)
    noise = np.random.default_rng(0).normal(0.0, 0.3, t.size)
    assert unreadable(np.stack([noise, noise[::-1]], axis=1), 0.8, INTERNAL_FS_HZ)
    signal = np.concatenate([qrs, flat])[:, None]
    np.testing.assert_array_equal(unreadable_beats(signal, np.array([before]), np.array([0.8]), INTERNAL_FS_HZ),
                                  [False])
