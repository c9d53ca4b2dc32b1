"""int8 ONNX Runtime engines: `build-engine --onnx-int8` and `quantize_engine` on a tiny real segment network.

The network is a real `train.models` segmenter (untrained weights with non-trivial batch-norm statistics), built
through the same `build_engine` as the shipped engines, and compared with its own fp32 build on real LUDB windows
the int8 build neither calibrated nor was checked on.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from test_engines import SEG_WINDOW, _beat_meta, _beat_model, _checkpoint
from typer.testing import CliRunner

import train.quantize
from edge.inference import ManifestError, load_engine
from edge.inference.manifest import MANIFEST_FILE, ONNX_FILE, Manifest
from train.engine_build import (
    BuildError,
    build_engine,
    build_engine_from_model,
    plan_agreement,
    quantize_engine,
    quantize_engine_command,
)
from train.engine_eval import window_starts
from train.export import ExportCheckError
from train.quantize import INT8_CALIBRATION_WINDOWS, INT8_MIN_ARGMAX_AGREEMENT, int8_problem, ludb_part_windows


@pytest.fixture(scope="module")
def seg_engines(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """The same tiny segment checkpoint built as an fp32 and as an int8 engine folder."""
    root = tmp_path_factory.mktemp("int8")
    ckpt = _checkpoint(root / "segment.pt", "segment")
    build_engine(ckpt, root / "fp32", max_batch=64, data_dir=data_dir)
    build_engine(ckpt, root / "int8", max_batch=64, data_dir=data_dir, onnx_int8=True)
    return {"fp32": root / "fp32", "int8": root / "int8", "ckpt": ckpt}


def test_int8_engine_loads_and_agrees_with_fp32_on_unseen_ludb_windows(
    seg_engines: dict[str, Path], data_dir: Path
) -> None:
    m = Manifest.load(seg_engines["int8"])
    assert m.onnx_precision == "int8" and Manifest.load(seg_engines["fp32"]).onnx_precision == "fp32"
    check = m.metrics["int8_check"]
    assert check["calibration_windows"] == INT8_CALIBRATION_WINDOWS and check["windows"] == 192
    assert check["argmax_agreement"] >= INT8_MIN_ARGMAX_AGREEMENT
    ops = {n.op_type for n in onnx.load(seg_engines["int8"] / ONNX_FILE).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ graph
    # LUDB train-part leads after the 256 calibration rows: seen by neither the calibration nor the check
    windows = ludb_part_windows(m.leads, True, m.fs_hz, SEG_WINDOW, "train", INT8_CALIBRATION_WINDOWS + 96, data_dir)
    windows = windows[INT8_CALIBRATION_WINDOWS:]
    with (
        load_engine(seg_engines["int8"], "onnxruntime", threads=1) as int8,
        load_engine(seg_engines["fp32"], "onnxruntime", threads=1) as fp32,
    ):
        got, want = int8.infer(windows), fp32.infer(windows)
    assert got.shape == want.shape == (96, 4, SEG_WINDOW) and got.dtype == np.float32
    agreement = plan_agreement(got, want, "softmax")
    assert int8_problem("segment", agreement) is None, agreement
    assert not np.array_equal(got, want)  # it is a different (quantised) graph


def test_int8_below_the_floor_fails_the_build(
    seg_engines: dict[str, Path], tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train.quantize, "INT8_MIN_ARGMAX_AGREEMENT", 1.01)
    with pytest.raises(ExportCheckError, match=r"int8 model\.onnx fails its check on 192 LUDB val windows: wave-class"):
        build_engine(seg_engines["ckpt"], tmp_path / "seg", data_dir=data_dir, onnx_int8=True)
    assert not (tmp_path / "seg").exists() and not list(tmp_path.iterdir())  # no half-built folder left


def test_bad_onnx_precision_is_one_line(seg_engines: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "seg"
    folder.mkdir()
    (folder / ONNX_FILE).write_bytes((seg_engines["int8"] / ONNX_FILE).read_bytes())
    raw = json.loads((seg_engines["int8"] / MANIFEST_FILE).read_text())
    (folder / MANIFEST_FILE).write_text(json.dumps(raw | {"onnx_precision": "fp16"}))
    with pytest.raises(ManifestError) as info:
        Manifest.load(folder)
    assert str(info.value) == f"{folder / MANIFEST_FILE}: onnx_precision 'fp16' is not one of ('fp32', 'int8')"
    (folder / MANIFEST_FILE).write_text(json.dumps(raw | {"onnx_precision": 8}))
    with pytest.raises(ManifestError, match=r"key 'onnx_precision' must be str, got int$"):
        Manifest.load(folder)
    del raw["onnx_precision"]  # a manifest from before the field: fp32
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    assert Manifest.load(folder).onnx_precision == "fp32"


def test_quantize_engine_folder_without_checkpoint(
    seg_engines: dict[str, Path], tmp_path: Path, data_dir: Path
) -> None:
    args = [str(seg_engines["fp32"]), "--out", str(tmp_path / "q"), "--data-dir", str(data_dir)]
    result = CliRunner().invoke(_app(), args)
    assert result.exit_code == 0, result.output
    assert "int8 (calibrated on 256 LUDB train windows), against fp32 on 192 LUDB val windows" in result.output
    m = Manifest.load(tmp_path / "q")
    want = Manifest.load(seg_engines["int8"])
    assert (m.name, m.onnx_precision) == ("q", "int8")
    assert m.metrics["int8_check"] == want.metrics["int8_check"]  # same calibration and check as the build path
    with pytest.raises(BuildError, match=r"model\.onnx is already int8; quantise from an fp32 engine"):
        quantize_engine(tmp_path / "q", tmp_path / "q2", data_dir=data_dir)
    result = CliRunner().invoke(_app(), [str(tmp_path / "q"), "--out", str(tmp_path / "q2")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("error: ")


def test_onnx_int8_refuses_beat_engines_and_test_records(tmp_path: Path, data_dir: Path) -> None:
    with pytest.raises(BuildError, match=r"^--onnx-int8 supports one-input segment and classify engines .* with "):
        build_engine_from_model(_beat_model(), _beat_meta(), tmp_path / "b", data_dir=data_dir, onnx_int8=True)
    with pytest.raises(ValueError, match="not 'test'"):
        ludb_part_windows(("II",), True, 250.0, 800, "test", 8, data_dir)


def test_window_starts_cover_the_lead() -> None:
    assert window_starts(2500, 800).tolist() == [0, 400, 800, 1200, 1600, 1700]
    assert window_starts(800, 800).tolist() == [0]
    with pytest.raises(ValueError, match="shorter than the 800-sample window"):
        window_starts(500, 800)


def _app() -> object:
    import typer

    app = typer.Typer()
    app.command()(quantize_engine_command)
    return app
