"""Engine faults: a failed in-place ``train build-engine`` leaves the old engine folder intact, and a TensorRT plan
that will not load falls back to ONNX Runtime under ``--backend auto`` (one warning line) but is a one-line
``EngineError`` when ``tensorrt`` is asked for explicitly."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from edge.ecg import PTBXL_SUPERCLASSES
from edge.inference import OPENERS, BackendOpener, EngineError, load_engine, tensorrt_unavailable_reason
from edge.inference.manifest import MANIFEST_FILE, ONNX_FILE, PLAN_FILE, Manifest, Normalisation, file_entry
from edge.inference.onnx_backend import OnnxRuntimeBackend
from train.engine_build import build_engine_from_model
from train.export import ExportCheckError, reference_windows

WINDOW = 2500
TRT_REASON = tensorrt_unavailable_reason()


class TinyClassifier(torch.nn.Module):
    """One conv, global average, one linear layer: ``(B, 1, T)`` -> ``(B, 5)`` logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv1d(1, 4, 7, padding=3)
        self.head = torch.nn.Linear(4, len(PTBXL_SUPERCLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=2))


class FrozenBranch(TinyClassifier):
    """Data-dependent Python control flow: the ONNX tracer records the branch taken on the all-zero export example
    (``* 0``), so the exported model returns zeros where PyTorch does not and the export check must fail."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return y if bool(x.abs().sum() > 0) else y * 0


def _meta() -> dict:
    return {
        "task": "classify",
        "leads": ["II"],
        "fs_hz": 250,
        "window_samples": WINDOW,
        "class_names": list(PTBXL_SUPERCLASSES),
        "normalisation": Normalisation(kind="zscore", eps=1e-3).to_dict(),
        "thresholds": [0.5] * len(PTBXL_SUPERCLASSES),
        "metrics": {},
    }


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_failed_in_place_build_keeps_the_old_engine(tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "engine"
    build_engine_from_model(TinyClassifier(), _meta(), folder, max_batch=8, data_dir=data_dir)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) >= {MANIFEST_FILE, ONNX_FILE}
    with pytest.raises(ExportCheckError, match=r"ONNX Runtime differs from PyTorch by .* on 32 real windows"):
        build_engine_from_model(FrozenBranch(), _meta(), folder, max_batch=8, data_dir=data_dir)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert Manifest.load(folder).max_batch == 8  # hashes verified: the old engine still loads
    assert [p.name for p in tmp_path.iterdir()] == ["engine"]  # no temporary folder left beside it


def _onnx_parser_as_tensorrt(folder: Path, manifest: Manifest, threads: int | None) -> OnnxRuntimeBackend:
    """Without TensorRT: a stand-in "tensorrt" that really deserialises ``model.plan`` — with ONNX Runtime's parser,
    which fails on a corrupt file as TensorRT's does."""
    return OnnxRuntimeBackend(folder / PLAN_FILE, manifest.input_name, manifest.output_names[0], threads)


#: The real TensorRT opener where TensorRT runs here (a real failing deserialisation), else the stand-in.
OPENERS_UNDER_TEST = (
    OPENERS
    if TRT_REASON is None
    else {**OPENERS, "tensorrt": BackendOpener(lambda: None, _onnx_parser_as_tensorrt)}
)


@pytest.fixture
def garbage_plan_engine(tmp_path: Path, data_dir: Path) -> Path:
    """A valid engine whose model.plan is 4 KiB of random bytes (listed, with its sha256), as a corrupt copy or a plan
    from another TensorRT would be."""
    folder = tmp_path / "engine"
    build_engine_from_model(TinyClassifier(), _meta(), folder, max_batch=8, data_dir=data_dir)
    plan = folder / PLAN_FILE
    plan.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["files"][PLAN_FILE] = file_entry(plan)
    raw["tensorrt"] = {"version": "10.0.0", "device": "another GPU"}
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    return folder


def test_auto_falls_back_to_onnxruntime_when_the_plan_will_not_load(
    garbage_plan_engine: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    windows = reference_windows(("II",), False, 250, WINDOW, 12, data_dir)
    with caplog.at_level(logging.WARNING, logger="edge.inference.engine"):
        engine = load_engine(garbage_plan_engine, backend="auto", openers=OPENERS_UNDER_TEST)
    with engine, load_engine(garbage_plan_engine, backend="onnxruntime") as reference:
        assert engine.backend.name == "onnxruntime"
        np.testing.assert_array_equal(engine.infer(windows), reference.infer(windows))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith("engine 'engine': model.plan will not load, running on ONNX Runtime: ")


def test_explicit_tensorrt_that_will_not_load_is_one_line(garbage_plan_engine: Path) -> None:
    with pytest.raises(EngineError, match=r"^backend 'tensorrt' cannot load engine 'engine': .+") as info:
        load_engine(garbage_plan_engine, backend="tensorrt", openers=OPENERS_UNDER_TEST)
    assert "\n" not in str(info.value)


@pytest.mark.tensorrt
@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT unavailable: {TRT_REASON}")
def test_real_tensorrt_refuses_the_garbage_plan(garbage_plan_engine: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(EngineError, match=r"could not deserialise the plan \(built with TensorRT 10\.0\.0 on another"):
        load_engine(garbage_plan_engine, backend="tensorrt")
    with caplog.at_level(logging.WARNING, logger="edge.inference.engine"), load_engine(garbage_plan_engine) as engine:
        assert engine.backend.name == "onnxruntime"
    assert sum("model.plan will not load" in r.getMessage() for r in caplog.records) == 1
