"""Several processes through torchrun (DistributedDataParallel): the multi-GPU code path, run on the CPU with gloo.

NCCL and CUDA are not here; what this checks is ours: the launcher contract (WORLD_SIZE / RANK / LOCAL_RANK), the
DistributedSampler splitting the data between ranks, only rank 0 writing checkpoints and metrics, and the time budget
ending the run on every rank (the stop decision is all-reduced, so ranks whose clocks disagree by a step still leave
together instead of one hanging in the next gradient all-reduce; here both see the budget spent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from train.checkpoint import load_checkpoint

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
