"""Re-windowed segment engines: `train quantize-engine --window-samples` on a tiny real segmenter.

The network is a real `train.models` segmenter (untrained weights, non-trivial batch-norm statistics; the tiny
model of `test_engines` with 31-sample kernels, so that its receptive-field need, 28 samples, is more than one
stride step) built as an fp32 engine through `build_engine` at 2000 samples, then re-windowed to 1000 samples and
quantised. The copy must
load through `load_engine` with its new window and agree with the source on the centre of real LUDB windows that
neither its check (val part) nor its calibration (first 256 train rows) read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import test_engines
from test_engines import SEG_WINDOW, _checkpoint
from typer.testing import CliRunner

from edge.inference import load_engine
from edge.inference.manifest import ONNX_FILE, Manifest
from train.engine_build import (
    WINDOW_MIN_CENTRE_AGREEMENT,
    BuildError,
    build_engine,
    graph_downsampling,
    quantize_engine,
    quantize_engine_command,
    receptive_field_need,
    rewindow_segment_onnx,
    window_problem,
)
from train.quantize import INT8_CALIBRATION_WINDOWS, ludb_part_windows

SHORT = SEG_WINDOW // 2


@pytest.fixture(scope="module")
def fp32_engine(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("window")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(test_engines, "TINY_MODEL", {**test_engines.TINY_MODEL, "kernel": 31})
        checkpoint = _checkpoint(root / "segment.pt", "segment")
    build_engine(checkpoint, root / "fp32", max_batch=64, data_dir=data_dir)
    return root / "fp32"


def test_rewindowed_engine_loads_and_agrees_with_the_source_centre(
    fp32_engine: Path, tmp_path: Path, data_dir: Path
) -> None:
    m = quantize_engine(fp32_engine, tmp_path / "short", data_dir=data_dir, window_samples=SHORT)
    loaded = Manifest.load(tmp_path / "short")
    assert loaded == m
    assert (m.window_samples, m.hop_samples, m.input_shape) == (SHORT, SHORT // 2, (None, 1, SHORT))
    assert m.onnx_precision == "int8" and m.metrics["window_check"]["source_window_samples"] == SEG_WINDOW
    assert m.metrics["window_check"]["argmax_agreement"] >= WINDOW_MIN_CENTRE_AGREEMENT
    assert m.metrics["int8_check"]["windows"] == 192 and "--window-samples 1000" in m.created_by
    dims = onnx.load(tmp_path / "short" / ONNX_FILE).graph.input[0].type.tensor_type.shape.dim
    assert dims[2].dim_value == SHORT
    # LUDB train-part leads after the calibration rows: read by neither the window check nor the int8 calibration
    full = ludb_part_windows(m.leads, True, m.fs_hz, SEG_WINDOW, "train", INT8_CALIBRATION_WINDOWS + 64, data_dir)
    full = full[INT8_CALIBRATION_WINDOWS:]
    lo = (SEG_WINDOW - SHORT) // 2
    with (
        load_engine(tmp_path / "short", "onnxruntime", threads=1) as short,
        load_engine(fp32_engine, "onnxruntime", threads=1) as source,
    ):
        got = short.infer(np.ascontiguousarray(full[:, :, lo : lo + SHORT]))
        want = source.infer(full)
        with pytest.raises(ValueError, match=r"takes \(batch, 1, 1000\) windows"):
            short.infer(full)
    assert got.shape == (64, 4, SHORT)
    a, b = SHORT // 4, SHORT - SHORT // 4
    agreement = np.mean(got[:, :, a:b].argmax(axis=1) == want[:, :, lo + a : lo + b].argmax(axis=1))
    assert agreement >= WINDOW_MIN_CENTRE_AGREEMENT, agreement


def test_a_length_off_the_stride_grid_is_one_line(fp32_engine: Path, tmp_path: Path, data_dir: Path) -> None:
    assert graph_downsampling(onnx.load(fp32_engine / ONNX_FILE)) == 20  # stem 2 x strides 2, 5
    args = [str(fp32_engine), "--out", str(tmp_path / "q"), "--window-samples", "1010", "--data-dir", str(data_dir)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output == (
        "error: --window-samples 1010 is not a multiple of the network's down-sampling (20 samples)\n"
    )
    assert not (tmp_path / "q").exists() and not list(tmp_path.iterdir())  # no half-built folder left


def test_a_window_shorter_than_the_receptive_field_is_refused(
    fp32_engine: Path, tmp_path: Path, data_dir: Path
) -> None:
    source = Manifest.load(fp32_engine)
    need = receptive_field_need(source, fp32_engine / ONNX_FILE, data_dir)
    assert 20 < need < 60  # measured 28 samples: wider than one stride step (20), far below the 1000-sample window
    short = 2 * need // 20 * 20  # the longest multiple of 20 below 2 x need
    with pytest.raises(BuildError) as info:
        rewindow_segment_onnx(source, fp32_engine / ONNX_FILE, tmp_path / ONNX_FILE, short, data_dir)
    assert str(info.value) == (
        f"--window-samples {short} is shorter than 2 x the network's receptive-field need of {need} samples "
        f"({2 * need})"
    )
    assert not (tmp_path / ONNX_FILE).exists()
    assert window_problem(short + 20, 20, need) is None


def test_window_samples_is_for_segment_engines(tmp_path: Path, data_dir: Path) -> None:
    cls = tmp_path / "cls"
    build_engine(_checkpoint(tmp_path / "c.pt", "classify"), cls, max_batch=8, data_dir=data_dir)
    with pytest.raises(BuildError, match=r"^--window-samples applies to segment engines only, not this classify"):
        quantize_engine(cls, tmp_path / "q", data_dir=data_dir, window_samples=1000)


def _app() -> object:
    import typer

    app = typer.Typer()
    app.command()(quantize_engine_command)
    return app
