"""LUDB segmentation accuracy of a built segment engine folder (no checkpoint): Dice and boundary errors per wave.

``train evaluate`` scores a checkpoint in PyTorch on whole 10 s LUDB leads. An engine folder takes fixed windows
(``window_samples``, e.g. 800 samples = 3.2 s at 250 Hz), so :func:`segment_leads` cuts each lead into windows every
half window (the last one flush with the end), runs the engine (ONNX Runtime, fp32 or int8 ``model.onnx``), and
labels every sample from the window whose centre is nearest to it. :func:`segment_engine_report` then scores the
labels with the same :func:`train.metrics.segmentation_report` (150 ms tolerance, predicted waves shorter than
``RunConfig.min_wave_ms`` ignored) on one part of the training split — the held-out ``test`` part for honest numbers.
Used by ``bench/engines.py --compare`` to put fp32 and int8 engines side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge.ecg import WAVE_CLASSES
from edge.inference.engine import Engine
from train.config import DataConfig, RunConfig
from train.data import ludb
from train.metrics import segmentation_report


def window_starts(n_samples: int, window_samples: int) -> np.ndarray:
    """First sample of each window over a lead of ``n_samples``: every ``window_samples // 2``, plus one window
    ending at the last sample when that grid does not reach it.

    Raises:
        ValueError: the lead is shorter than one window.
    """
    if n_samples < window_samples:
        raise ValueError(f"a lead of {n_samples} samples is shorter than the {window_samples}-sample window")
    starts = list(range(0, n_samples - window_samples + 1, max(1, window_samples // 2)))
    if starts[-1] != n_samples - window_samples:
        starts.append(n_samples - window_samples)
    return np.asarray(starts)


def segment_leads(engine: Engine, leads_mv: np.ndarray) -> np.ndarray:
    """Wave class (index into ``WAVE_CLASSES``) of every sample of each lead.

    Args:
        engine: a segment engine.
        leads_mv: ``(n_leads, n_samples)`` single leads in mV at the engine's rate.

    Returns:
        ``(n_leads, n_samples)`` int labels; each sample from the window whose centre is nearest (the earlier one
        on a tie).
    """
    n_leads, n_samples = leads_mv.shape
    w = engine.manifest.window_samples
    starts = window_starts(n_samples, w)
    windows = np.stack([leads_mv[:, s : s + w] for s in starts], axis=1).reshape(-1, 1, w)
    labels = engine.infer(windows).argmax(axis=1).reshape(n_leads, len(starts), w)
    t = np.arange(n_samples)
    owner = np.argmin(np.abs(t[None, :] - (starts[:, None] + (w - 1) / 2)), axis=0)
    return labels[:, owner, t - starts[owner]]


def segment_engine_report(engine: Engine, part: str = "test", data_dir: Path | None = None) -> dict[str, Any]:
    """Dice and onset / offset errors (ms) of a segment engine on one part of the LUDB training split.

    Args:
        engine: a segment engine at 250 Hz.
        part: ``train``, ``val`` or ``test`` of ``ludb.split`` with :class:`train.config.DataConfig`'s seed and
            fractions (what the shipped engines were trained with).
        data_dir: folder holding ``ludb/`` (default ``DataConfig().root``).

    Returns:
        ``{"records", "leads", "P" / "QRS" / "T": {dice, onset, offset}, "mean_dice", ...}`` as
        :func:`train.metrics.segmentation_report`.
    """
    cfg = DataConfig()
    root = (Path(data_dir) if data_dir is not None else cfg.root_path()) / "ludb"
    names = ludb.split(ludb.record_names(root), cfg.split_seed, cfg.test_fraction, cfg.val_fraction)[part]
    records = [ludb.load_record(root, n, engine.manifest.fs_hz) for n in names]
    preds = [lab for r in records for lab in segment_leads(engine, r.signal_mv)]
    report = segmentation_report(
        refs=[lab for r in records for lab in r.labels],
        preds=preds,
        spans=[tuple(s) for r in records for s in r.spans],
        class_names=WAVE_CLASSES,
        fs_hz=engine.manifest.fs_hz,
        tolerance_ms=150.0,
        min_wave_ms=RunConfig().min_wave_ms,
    )
    return {"records": len(records), "leads": len(preds), **report}
