"""Networks: shapes, RoI pooling, ONNX-friendly forward, one optimisation step on real LUDB leads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge.ecg import WAVE_CLASSES
from train import config
from train.losses import beat_loss, rhythm_loss
from train.models import Classifier, Encoder, EncoderConfig, PretrainModel, Segmenter, roi_pool
from train.tasks import SegmentTask


def test_roi_pooling_picks_the_right_columns() -> None:
    fmap = torch.arange(10, dtype=torch.float32).repeat(2, 3, 1)  # (B=2, C=3, T'=10), value = column index
    fmap[1] += 100
    item = torch.tensor([0, 0, 1, 1])
    start = torch.tensor([40, 45, 0, 190])  # downsampling 20: columns [2, 5), [2, 4), [0, 1), [9, 10)
    stop = torch.tensor([100, 61, 5, 260])  # the last window runs past the end: clipped to column 9
    pooled = roi_pool(fmap, item, start, stop, downsampling=20)
    torch.testing.assert_close(pooled[:, 0], torch.tensor([3.0, 2.5, 100.0, 109.0]))
    assert pooled.shape == (4, 3)


def test_roi_pooling_of_the_encoder_map_averages_its_columns() -> None:
    enc = Encoder(EncoderConfig(widths=(8, 16), strides=(1, 5), blocks=1)).eval()
    x = torch.randn(1, 1, 1000)
    fmap = enc(x)[-1]  # downsampling 10 -> 100 columns
    pooled = roi_pool(fmap, torch.tensor([0]), torch.tensor([200]), torch.tensor([350]), enc.cfg.downsampling)
    torch.testing.assert_close(pooled[0], fmap[0, :, 20:35].mean(dim=1))


def test_shapes_and_size() -> None:
    cfg = EncoderConfig()
    seg = Segmenter(Encoder(cfg), len(WAVE_CLASSES)).eval()
    cls = Classifier(Encoder(cfg), 12, 5).eval()
    assert seg(torch.randn(2, 1, 2500)).shape == (2, 4, 2500)
    assert cls(torch.randn(2, 12, 2500)).shape == (2, 5)
    assert sum(p.numel() for p in seg.parameters()) <= 1_000_000  # < 5 MB as float32 ONNX


@pytest.fixture(scope="module")
def tiny_segment_task(data_dir: Path) -> SegmentTask:
    cfg = config.load(
        "cpu-small-finetune-segment",
        {"data": {"root": str(data_dir), "label_fraction": 0.02}, "model": {"widths": [8, 8, 16]}},
    )
    return SegmentTask(cfg)


def test_one_training_step_lowers_the_loss(tiny_segment_task: SegmentTask) -> None:
    torch.manual_seed(0)
    task = tiny_segment_task
    batch = task.collate([task.train_set[i] for i in range(8)])
    model = task.model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before, _ = task.loss(model, batch)
    opt.zero_grad()
    before.backward()
    opt.step()
    after, _ = task.loss(model, batch)
    assert after.item() < before.item()


def test_losses_under_bfloat16_autocast_stay_float32_and_close(tiny_segment_task: SegmentTask) -> None:
    """The GPU recipe trains under bfloat16 autocast (train.loop); here the same autocast runs on the CPU."""
    torch.manual_seed(0)
    task = tiny_segment_task
    batch = task.collate([task.train_set[i] for i in range(4)])
    model = task.model.train()
    full, _ = task.loss(model, batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half, _ = task.loss(model, batch)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert abs(half.item() - full.item()) < 0.05 * full.item()
    half.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    pre = PretrainModel(Encoder(EncoderConfig(widths=(8, 16), strides=(1, 5), blocks=1)), 32, 16).train()
    x, item = torch.randn(4, 1, 500), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    start = torch.tensor([50, 300] * 4)
    record, sim = torch.tensor([0, 0, 1, 1]), torch.full((4, 4), 0.97)

    def pretrain_loss() -> torch.Tensor:
        z_r, z_b = pre(x, item, start, start + 120)
        rhythm = rhythm_loss(z_r[:2], z_r[2:], torch.full((2, 2), 0.9), "soft_1", 50.0, 0.1)
        return rhythm + beat_loss(z_b[:4], z_b[4:], record, sim, "soft_1", 50.0, 0.1, 0.95)

    full = pretrain_loss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = pretrain_loss()
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert abs(half.item() - full.item()) < 0.05 * full.item()
