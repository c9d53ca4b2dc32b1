"""offline.plots: every plot writes a PNG of the requested pixel size with something drawn on it; detect --plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from typer.testing import CliRunner

from beatssl import cli
from edge.detection.beats import detect_record
from edge.ecg import PTBXL_SUPERCLASSES, WAVE_CLASSES
from offline import plots
from offline.records import read_annotations, read_record
from offline.scoring import beat_samples


def assert_png(path: Path, size_px: tuple[int, int]) -> None:
    """A PNG of ``size_px`` (width, height) that is not one flat colour."""
    assert path.is_file() and path.stat().st_size > 0
    image = mpimg.imread(path)
    assert image.shape[:2] == (size_px[1], size_px[0])
    assert image[..., :3].std() > 0.01, f"{path.name} is blank"


def test_record_beats_with_reference(data_dir: Path, tmp_path: Path) -> None:
    rec = read_record(data_dir / "mitdb" / "100")
    first = rec.signal_mv[: int(60 * rec.fs_hz)]
    beats = [b.sample for b in detect_record(first, rec.fs_hz)]
    samples, symbols = read_annotations(data_dir / "mitdb" / "100")
    truth = beat_samples(samples, symbols)
    out = plots.plot_record_beats(first, rec.fs_hz, rec.leads, beats, tmp_path / "sub" / "100.png",
                                  truth=truth[truth < len(first)], start_s=20.0, size_px=(1200, 700))
    assert out == tmp_path / "sub" / "100.png"
    assert_png(out, (1200, 700))


def test_detect_plot_cli(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "ludb1.png"
    result = CliRunner().invoke(cli.app, ["detect", str(data_dir / "ludb" / "data" / "1"), "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert_png(out, (1600, 900))


def test_latency_histogram(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.gamma(4.0, 2.0, 2000), [500.0, np.nan]])  # an outlier and a NaN
    assert_png(plots.plot_latency_histogram(values, tmp_path / "lat.png", "beat latency"), (1000, 600))
    assert_png(plots.plot_latency_histogram([], tmp_path / "none.png", "nothing", size_px=(400, 300)), (400, 300))


def test_scaling(tmp_path: Path) -> None:
    series = {"batched e2e p99": ([50, 75, 100, 125], [140, 210, 396, 2400], [True, True, True, False]),
              "unbatched e2e p99": ([50, 75], [115, 900], [True, False])}
    assert_png(plots.plot_scaling(series, tmp_path / "scale.png", 500.0, "latency vs devices"), (1000, 600))


def test_loss_curves(tmp_path: Path) -> None:
    history = {"train_loss": [2.1, 1.5, 1.2, 1.0], "val_loss": [2.0, 1.6, 1.4, 1.35],
               "val_auroc": [0.6, 0.7, 0.8, 0.82]}
    assert_png(plots.plot_loss_curves(history, tmp_path / "loss.png", size_px=(900, 500)), (900, 500))


def test_segmentation(tmp_path: Path) -> None:
    fs = 250.0
    t = np.arange(int(2 * fs)) / fs
    signal = np.sin(2 * np.pi * 1.2 * t)
    truth = np.zeros(t.size, dtype=np.int64)
    truth[50:70], truth[100:125], truth[180:240] = (WAVE_CLASSES.index(w) for w in ("P", "QRS", "T"))
    truth[:10] = -1  # not annotated
    pred = np.roll(truth.clip(0), 5)
    assert_png(plots.plot_segmentation(signal, fs, truth, pred, tmp_path / "seg.png", title="LUDB 1, II"),
               (1600, 600))


def test_confusion_multiclass_and_multilabel(tmp_path: Path) -> None:
    names = ("N", "S", "V")
    matrix = np.array([[90, 5, 5], [3, 20, 2], [1, 1, 30]])
    assert_png(plots.plot_confusion(matrix, names, tmp_path / "cm.png"), (900, 800))
    rng = np.random.default_rng(1)
    multilabel = rng.integers(0, 100, size=(len(PTBXL_SUPERCLASSES), 2, 2))
    assert_png(plots.plot_confusion(multilabel, PTBXL_SUPERCLASSES, tmp_path / "ml.png", size_px=(800, 500)),
               (800, 500))
    with pytest.raises(ValueError, match="neither"):
        plots.plot_confusion(np.zeros((2, 3)), names, tmp_path / "bad.png")
