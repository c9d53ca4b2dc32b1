"""Beat classes for the pretraining's hard beat targets from a beat classifier (the paper's "Beat Classifier").

``loss.beat_classes: classifier`` makes two beats of one pretraining window the same class when a beat-classify
engine (``engines/beat-cls`` by default, run on ONNX Runtime) gives them the same AAMI class, instead of when their
templates correlate above ``loss.beat_hard_threshold``. The engine reads each beat's window of the window's
reference lead (:func:`train.features.reference_lead`: II or MLII where present, whatever the engine's manifest
names) with the beat features the edge computes (:func:`edge.interpret.beat_class.beat_features`) over the beats of
that 10 s window only: the RR means span the window, and the dominant beat is learnt from its first beats.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ
from edge.inference import Engine, load_engine, to_probabilities
from edge.interpret.beat_class import beat_features, decide, feature_columns

#: Beats per engine call.
BATCH = 512


def load_beat_classifier(folder: Path) -> Engine:
    """The beat-classify engine at ``folder`` on ONNX Runtime (one thread).

    Raises:
        ValueError: the folder holds another task's engine or one whose features the edge does not compute.
    """
    engine = load_engine(folder, backend="onnxruntime", threads=1)
    m = engine.manifest
    if m.task != "beat-classify" or tuple(m.class_names) != AAMI_CLASSES:
        raise ValueError(f"{folder} is not an AAMI beat-classify engine (task {m.task!r})")
    feature_columns(m.feature_names)
    return engine


def window_beat_classes(engine: Engine, signal_mv: np.ndarray, r_peaks: np.ndarray) -> np.ndarray:
    """AAMI class index of each beat of one lead of one pretraining window.

    Args:
        engine: a beat-classify engine (:func:`load_beat_classifier`) at the internal rate.
        signal_mv: ``(n,)`` the window's reference lead (mV) at :data:`edge.ecg.INTERNAL_FS_HZ`.
        r_peaks: ``(k,)`` R samples in the window, increasing.

    Returns:
        ``(k,)`` int64 indices into :data:`edge.ecg.AAMI_CLASSES`. Beat windows reaching past the signal repeat its
        first or last sample.
    """
    m = engine.manifest
    r = np.asarray(r_peaks, dtype=np.int64)
    if r.size == 0:
        return np.zeros(0, dtype=np.int64)
    before, window = m.r_offset_samples or 0, m.window_samples
    padded = np.pad(np.asarray(signal_mv, dtype=np.float32), (before, window), mode="edge")
    windows = padded[r[:, None] + np.arange(window)[None, :]]  # r - before + before (pad) = r
    feats = beat_features(r / INTERNAL_FS_HZ, signal_mv, r, INTERNAL_FS_HZ)[:, feature_columns(m.feature_names)]
    feats = feats.astype(np.float32)
    thresholds = m.threshold_vector
    out = []
    for lo in range(0, r.size, BATCH):
        logits = engine.infer(windows[lo : lo + BATCH, None, :], features=feats[lo : lo + BATCH])
        out.append(decide(to_probabilities(logits, m.activation), thresholds))
    return np.concatenate(out).astype(np.int64)
