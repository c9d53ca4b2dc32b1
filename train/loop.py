"""The one training loop, shared by pretraining and fine-tuning (nanoGPT style, top to bottom).

batch -> forward + loss (task) -> backward -> clip -> step -> log -> checkpoint. DistributedDataParallel when
launched by ``torchrun`` (``WORLD_SIZE`` > 1; the other collectives are in :mod:`train.distributed`), bfloat16
autocast on CUDA, a progress bar with loss and samples/s, ``last.pt`` after every epoch for resume, ``model.pt`` +
``metrics.json`` at the end.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
import time
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from train.checkpoint import read_checkpoint, save_checkpoint
from train.config import Config
from train.distributed import any_rank
from train.tasks import Task


def _lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def fit(cfg: Config, task: Task) -> dict[str, Any]:
    """Train ``task.model`` as ``cfg`` says; returns the final metrics (also written to ``out_dir/metrics.json``)."""
    # ---- processes, devices, seeds
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if ddp:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if ddp else 0
    master = rank == 0
    if cfg.run.device == "auto":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu"
    else:
        device = cfg.run.device
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    random.seed(cfg.run.seed + rank)
    np.random.seed(cfg.run.seed + rank)
    torch.manual_seed(cfg.run.seed + rank)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cfg.run.amp and device.startswith("cuda") else nullcontext()
    out = cfg.out_path()
    out.mkdir(parents=True, exist_ok=True)

    # ---- data, model, optimiser
    sampler = DistributedSampler(task.train_set, shuffle=True, seed=cfg.run.seed) if ddp else None
    loader = DataLoader(
        task.train_set,
        batch_size=cfg.optim.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=len(task.train_set) > cfg.optim.batch_size,
        collate_fn=task.collate,
        num_workers=cfg.run.num_workers,
    )
    model = task.model.to(device)
    if cfg.optim.freeze_encoder:
        model.encoder.requires_grad_(False)
    encoder_ids = {id(p) for p in model.encoder.parameters()}
    groups = [  # the encoder group's lr_scale is set per epoch (_encoder_rate)
        {"params": [p for p in model.parameters() if id(p) in encoder_ids], "lr_scale": 1.0},
        {"params": [p for p in model.parameters() if id(p) not in encoder_ids], "lr_scale": 1.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    total_steps = cfg.optim.epochs * len(loader)
    step, start_epoch, history = 0, 0, []
    last = out / "last.pt"
    if cfg.run.resume and last.exists():
        ckpt = read_checkpoint(last)
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["state"]["optimizer"])
        step, start_epoch, history = ckpt["state"]["step"], ckpt["state"]["epoch"], ckpt["state"]["history"]
        if master:
            print(f"resumed from {last} at epoch {start_epoch}, step {step}")
    net = DistributedDataParallel(model, device_ids=[device] if device.startswith("cuda") else None) if ddp else model

    # ---- the loop
    t_start = time.monotonic()
    out_of_time = False
    log = open(out / "log.jsonl", "a") if master else None
    for epoch in range(start_epoch, cfg.optim.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        bar = tqdm(loader, desc=f"{task.name} epoch {epoch + 1}/{cfg.optim.epochs}", disable=not master, leave=False)
        t_epoch, seen, running = time.monotonic(), 0, []
        optimizer.param_groups[0]["lr_scale"] = _encoder_rate(cfg, epoch)
        for batch in bar:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            for g in optimizer.param_groups:
                g["lr"] = cfg.optim.lr * g["lr_scale"] * _lr_factor(step, cfg.optim.warmup_steps, total_steps)
            with amp:
                loss, parts = task.loss(net, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
            optimizer.step()
            step += 1
            seen += batch["x"].shape[0]
            running.append(loss.item())
            rate = seen / max(1e-9, time.monotonic() - t_epoch)
            bar.set_postfix(loss=f"{running[-1]:.4f}", samples_s=f"{rate:.1f}")
            if master and step % cfg.run.log_every == 0:
                entry = {"step": step, "epoch": epoch, "loss": running[-1], **parts, "samples_s": rate}
                log.write(json.dumps(entry) + "\n")
                log.flush()
            if any_rank(time.monotonic() - t_start > 60 * cfg.optim.max_minutes, device):
                out_of_time = True
                break
        # ---- end of epoch: validate, checkpoint
        epoch_log: dict[str, Any] = {"epoch": epoch + 1, "step": step, "train_loss": float(np.mean(running))}
        if master and ((epoch + 1) % cfg.run.eval_every == 0 or out_of_time or epoch + 1 == cfg.optim.epochs):
            model.eval()
            epoch_log["val"] = _headline(task.evaluate(model, "val"))
        epoch_log["elapsed_s"] = time.monotonic() - t_start
        history.append(epoch_log)
        if master:
            print(json.dumps(epoch_log))
            state = {"optimizer": optimizer.state_dict(), "step": step, "epoch": epoch + 1, "history": history}
            save_checkpoint(last, model, task.meta(), state)
        if out_of_time:
            if master:
                print(f"time budget of {cfg.optim.max_minutes} min reached after epoch {epoch + 1}; stopping")
            break

    # ---- final evaluation and the model file
    metrics: dict[str, Any] = {}
    if master:
        model.eval()
        task.finalise(model)
        metrics = {
            "task": task.name,
            "epochs_done": history[-1]["epoch"] if history else 0,
            "steps": step,
            "train_seconds": history[-1]["elapsed_s"] if history else 0.0,
            "stopped_by_time": out_of_time,
            "history": history,
            "val": task.evaluate(model, "val"),
            "test": task.evaluate(model, "test"),
        }
        summary = {k: v for k, v in metrics.items() if k != "history"}  # the per-epoch log stays in metrics.json
        save_checkpoint(out / "model.pt", model, {**task.meta(), "metrics": summary})
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        log.close()
    if ddp:
        # the DDP wrapper (its reducer holds the process group) goes before the group: destroying the group under a
        # live wrapper aborted a rank at exit now and then ("terminate called without an active exception")
        del net
        gc.collect()
        dist.destroy_process_group()
    return metrics


def _encoder_rate(cfg: Config, epoch: int) -> float:
    """Learning-rate multiplier of the encoder in ``epoch`` (0-based).

    From scratch (no ``run.init``): 1. A pretrained encoder: 0 for the first ``optim.encoder_frozen_epochs`` (LP-FT;
    a rate, not ``requires_grad``, so DDP's gradient hooks stay the same in every epoch), then
    ``optim.encoder_lr_scale``.
    """
    if not cfg.run.init:
        return 1.0
    return 0.0 if epoch < cfg.optim.encoder_frozen_epochs else cfg.optim.encoder_lr_scale


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar entries of a metrics dict (for the per-epoch log line)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
