"""CLI (download up to the network call), configs, the loop end to end, resume and load_checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import torch
import wfdb
from typer.testing import CliRunner

from edge.ecg import LEADS_12, WAVE_CLASSES
from train import config
from train.checkpoint import load_checkpoint, read_checkpoint
from train.cli import app
from train.loop import fit
from train.tasks import make_task


def test_download_offline_gives_a_one_line_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = []

    def offline(db_dir: str, dl_dir: str, **_: object) -> None:
        calls.append((db_dir, dl_dir))
        raise requests.exceptions.ConnectionError("Max retries exceeded with url: /content/ludb/ (offline)")

    monkeypatch.setattr(wfdb, "dl_database", offline)
    result = CliRunner().invoke(app, ["data", "download", "ludb", "--dest", str(tmp_path / "ludb")])
    assert result.exit_code == 1
    assert calls == [("ludb", str(tmp_path / "ludb"))]
    assert "cannot download ludb from PhysioNet (offline?)" in result.output
    assert "Traceback" not in result.output
    assert CliRunner().invoke(app, ["data", "download", "mimic"]).exit_code == 2


def test_every_shipped_config_loads_and_unknown_keys_fail() -> None:
    for path in sorted(config.CONFIG_DIR.glob("*.yaml")):
        cfg = config.load(path.stem)
        assert cfg.task in ("pretrain", "classify", "segment", "beat-classify"), path
    with pytest.raises(ValueError, match="unknown config key 'loss.beta'"):
        config.load("cpu-small-pretrain", {"loss": {"beta": 1}})


def _tiny(data_dir: Path, out: Path, epochs: int) -> config.Config:
    return config.load(
        "cpu-small-finetune-segment",
        {
            "data": {"root": str(data_dir), "label_fraction": 0.02},
            "model": {"widths": [8, 8, 16]},
            "optim": {"epochs": epochs, "batch_size": 8},
            "run": {"out_dir": str(out)},
        },
    )


def test_fit_writes_a_checkpoint_that_load_checkpoint_rebuilds_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "seg", epochs=1)
    task = make_task(cfg)
    metrics = fit(cfg, task)
    assert metrics["epochs_done"] == 1 and 0.0 <= metrics["test"]["mean_dice"] <= 1.0
    assert json.loads((tmp_path / "seg" / "metrics.json").read_text())["steps"] == metrics["steps"]

    model, meta = load_checkpoint(tmp_path / "seg" / "model.pt")
    assert not model.training
    assert meta["task"] == "segment" and meta["fs_hz"] == 250 and meta["window_samples"] == 2500
    assert meta["class_names"] == list(WAVE_CLASSES) and meta["leads"] == list(LEADS_12)
    assert meta["normalisation"] == {"kind": "zscore", "eps": 1e-3}
    assert meta["metrics"]["test"]["mean_dice"] == metrics["test"]["mean_dice"]
    x = torch.randn(2, 1, 2500)
    torch.testing.assert_close(model(x), task.model.eval()(x))

    again = fit(_tiny(data_dir, tmp_path / "seg", epochs=2), make_task(_tiny(data_dir, tmp_path / "seg", epochs=2)))
    assert again["epochs_done"] == 2 and again["steps"] == 2 * metrics["steps"]  # resumed after epoch 1


def test_encoder_lr_scale_slows_only_a_pretrained_encoder(data_dir: Path, tmp_path: Path) -> None:
    def encoder_scale(out: Path) -> float:
        return read_checkpoint(out / "last.pt")["state"]["optimizer"]["param_groups"][0]["lr_scale"]

    scratch = _tiny(data_dir, tmp_path / "scratch", epochs=1)
    scratch.optim.encoder_lr_scale = 0.3
    fit(scratch, make_task(scratch))
    assert encoder_scale(tmp_path / "scratch") == 1.0  # nothing to preserve: full rate

    tuned = _tiny(data_dir, tmp_path / "tuned", epochs=1)
    tuned.optim.encoder_lr_scale = 0.3
    tuned.optim.encoder_frozen_epochs = 0  # no LP-FT phase: epoch 1 already runs at the scaled rate
    tuned.run.init = str(tmp_path / "scratch" / "model.pt")
    fit(tuned, make_task(tuned))
    assert encoder_scale(tmp_path / "tuned") == 0.3


def test_frozen_encoder_keeps_its_weights_while_the_decoder_learns(data_dir: Path, tmp_path: Path) -> None:
    cfg = _tiny(data_dir, tmp_path / "frozen", epochs=1)
    cfg.optim.freeze_encoder = True
    task = make_task(cfg)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    fit(cfg, task)
    after = task.model.state_dict()
    weights = [k for k in before if k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in weights if k.startswith("encoder."))
    assert not all(torch.equal(before[k], after[k]) for k in weights if not k.startswith("encoder."))


def test_lp_ft_holds_a_pretrained_encoder_for_its_first_epochs_then_tunes_it(data_dir: Path, tmp_path: Path) -> None:
    source = _tiny(data_dir, tmp_path / "source", epochs=1)
    fit(source, make_task(source))

    def tuned(epochs: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        cfg = _tiny(data_dir, tmp_path / "lpft", epochs=epochs)
        cfg.run.init = str(tmp_path / "source" / "model.pt")
        cfg.optim.encoder_frozen_epochs = 1
        task = make_task(cfg)
        before = {k: v.clone() for k, v in task.model.state_dict().items() if k.endswith("weight")}
        fit(cfg, task)
        return before, task.model.state_dict()

    def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], encoder: bool) -> list[str]:
        return [k for k in before if k.startswith("encoder.") == encoder and not torch.equal(before[k], after[k])]

    before, after = tuned(epochs=1)  # epoch 1: encoder at rate 0, decoder learning
    assert changed(before, after, encoder=True) == [] and changed(before, after, encoder=False)
    before, after = tuned(epochs=2)  # resumes after epoch 1; epoch 2 tunes the encoder too
    assert changed(before, after, encoder=True)
