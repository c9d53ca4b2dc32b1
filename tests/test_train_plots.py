"""`train evaluate --out m.json` writes its plots next to the JSON (loss curves, true vs predicted segmentation)."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib import image
from test_train_cli import _tiny
from typer.testing import CliRunner

from train.cli import app
from train.loop import fit
from train.tasks import make_task


def test_evaluate_writes_metrics_and_pngs(data_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "seg", epochs=1)
    fit(cfg, make_task(cfg))
    out = tmp_path / "eval" / "test.json"
    out.parent.mkdir()
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "seg" / "model.pt"), "--part", "test",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["records"] == 32 and 0.0 <= metrics["mean_dice"] <= 1.0
    pngs = sorted(out.parent.glob("*.png"))
    names = [p.name for p in pngs]
    assert "test_loss.png" in names and sum(n.startswith("test_segment_") for n in names) == 3
    for png in pngs:
        assert png.name in result.output
        height, width = image.imread(png).shape[:2]
        assert (width, height) in ((1000, 600), (1600, 600))
