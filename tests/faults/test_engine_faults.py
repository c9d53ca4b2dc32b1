"""Engine faults: a failed in-place ``train build-engine`` leaves the old engine folder intact, and a TensorRT plan
that will not load falls back to ONNX Runtime under ``--backend auto`` (one warning line) but is a one-line
``EngineError`` when ``tensorrt`` is asked for explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge.ecg import PTBXL_SUPERCLASSES
from edge.inference.manifest import MANIFEST_FILE, ONNX_FILE, Manifest, Normalisation
from train.engine_build import build_engine_from_model
from train.export import ExportCheckError

WINDOW = 2500


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
