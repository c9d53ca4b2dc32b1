"""Several processes through torchrun (DistributedDataParallel): the multi-GPU code path, run on the CPU with gloo.

NCCL and CUDA are not here; what this checks is ours: the launcher contract (WORLD_SIZE / RANK / LOCAL_RANK), the
DistributedSampler splitting the data between ranks, only rank 0 writing checkpoints and metrics, and the time budget
ending the run on every rank (the stop decision is all-reduced, so ranks whose clocks disagree by a step still leave
together instead of one hanging in the next gradient all-reduce; here both see the budget spent), and the rhythm
contrast over the views of every rank (train.distributed.gather_rows): two ranks with half a batch each give the loss
and, after DistributedDataParallel's gradient average, the gradient of one process with the whole batch.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from train.checkpoint import load_checkpoint
from train.distributed import gather_rows
from train.features import cosine_similarity01
from train.losses import rhythm_loss

TIMEOUT_S = 240


def torchrun(args: list[str], out: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 -m train.cli …`` on the CPU (loopback rendezvous, free port)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "train.cli", *args, "--out", str(out), "--device", "cpu", "--no-resume"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)


@pytest.fixture
def ptbxl_args(data_dir: Path) -> list[str]:
    return ["finetune", "--task", "classify", "-c", "cpu-small-finetune-classify", "--data-root", str(data_dir),
            "--batch-size", "2"]


def test_two_processes_split_the_data_and_rank_0_writes(ptbxl_args: list[str], tmp_path: Path) -> None:
    result = torchrun([*ptbxl_args, "--epochs", "2"], tmp_path / "ddp")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    # 8 training records (PTB-XL folds 1-8 here) over 2 ranks = 4 per rank = 2 steps of 2 per epoch (alone: 4)
    assert metrics["epochs_done"] == 2 and metrics["steps"] == 4
    assert not metrics["stopped_by_time"]
    model, meta = load_checkpoint(tmp_path / "ddp" / "model.pt")
    assert meta["task"] == "classify" and not any(k.startswith("module.") for k in model.state_dict())
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir()) == ["last.pt", "log.jsonl", "metrics.json",
                                                                     "model.pt"]


def test_time_budget_stops_every_rank_at_the_same_step(ptbxl_args: list[str], tmp_path: Path) -> None:
    # a budget already spent after the first step: all ranks must stop together instead of hanging
    result = torchrun([*ptbxl_args, "--epochs", "50", "--max-minutes", "0.000001"], tmp_path / "budget")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "budget" / "metrics.json").read_text())
    assert metrics["stopped_by_time"] and metrics["steps"] == 1 and metrics["epochs_done"] == 1


def test_beat_ssl_pretraining_runs_on_two_ranks(data_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "tiny-pretrain.yaml"
    cfg.write_text(
        "task: pretrain\n"
        f"data: {{root: {data_dir}, pretrain_sources: [ludb], max_windows_per_record: 1}}\n"
        "model: {widths: [8, 8, 16]}\n"
        "optim: {batch_size: 8, epochs: 1, warmup_steps: 2}\n"
    )
    result = torchrun(["pretrain", "-c", str(cfg)], tmp_path / "pre")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "pre" / "metrics.json").read_text())
    assert metrics["steps"] == 7  # 112 LUDB training records over 2 ranks = 56 each = 7 batches of 8
    assert 0.0 < metrics["history"][-1]["train_loss"] < 20.0


def _contrast_batch() -> tuple[torch.nn.Linear, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A projector (same init on every rank) and a whole batch: inputs of views 1 and 2 (6, 8), features (6, 5)."""
    torch.manual_seed(0)
    return torch.nn.Linear(8, 4), torch.randn(6, 8), torch.randn(6, 8), torch.randn(6, 5)


def _rhythm(z1: torch.Tensor, z2: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    sim = torch.from_numpy(cosine_similarity01(feats.numpy(), feats.numpy())).float()
    return rhythm_loss(z1, z2, sim, "soft_1", 50.0, 0.1)


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    layer, x1, x2, feats = _contrast_batch()
    net = DistributedDataParallel(layer)
    n = x1.shape[0] // world
    mine = slice(rank * n, (rank + 1) * n)
    z = net(torch.cat([x1[mine], x2[mine]]))
    loss = _rhythm(gather_rows(z[:n]), gather_rows(z[n:]), gather_rows(feats[mine]))
    loss.backward()  # DDP averages the weight gradient over the two ranks
    try:
        gather_rows(torch.zeros(rank + 1, 2))
        mismatch = ""
    except ValueError as exc:
        mismatch = str(exc)
    torch.save({"loss": loss.detach(), "grad": layer.weight.grad.clone(), "mismatch": mismatch}, f"{out}/{rank}.pt")
    # Tear down in order: DDP's reducer before its process group, and no rank leaving while the other still talks
    # (else gloo's threads can be destroyed joinable at exit: "terminate called", SIGABRT, about 1 run in 12).
    del net
    dist.barrier()
    dist.destroy_process_group()


def test_rhythm_contrast_spans_every_rank_and_matches_one_process(tmp_path: Path) -> None:
    layer, x1, x2, feats = _contrast_batch()
    z = layer(torch.cat([x1, x2]))
    whole = _rhythm(z[:6], z[6:], feats)
    whole.backward()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        torch.testing.assert_close(got["loss"], whole.detach())
        torch.testing.assert_close(got["grad"], layer.weight.grad)
        assert got["mismatch"] == "gather_rows needs the same batch on every rank, got [1, 2]"
