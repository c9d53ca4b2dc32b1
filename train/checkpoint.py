"""Checkpoints: one ``torch.save`` dict holding the weights, the model's build arguments and the metadata.

``load_checkpoint`` is the stable entry point for export and engine building: it rebuilds the network from the file
alone and returns it in eval mode with its metadata (task, leads, fs_hz, window_samples, class_names,
normalisation, thresholds, metrics, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from train.models import build_model

FORMAT = 1


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """Write ``model``'s weights with ``meta`` (must hold task, model, leads, class_names) and optional loop state.

    The file is written to a temporary name first and renamed, so a crash never leaves a half-written checkpoint.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, "state_dict": model.state_dict(), "meta": meta, "state": state or {}}, tmp)
    tmp.replace(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (weights, meta, loop state) on the CPU."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    if ckpt.get("format") != FORMAT:
        raise ValueError(f"{path}: not a train checkpoint of format {FORMAT}")
    return ckpt


def model_from_meta(meta: dict[str, Any]) -> nn.Module:
    """An untrained network with the architecture that ``meta`` describes."""
    return build_model(meta["task"], meta["model"], len(meta["leads"]), len(meta["class_names"]))


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network of a checkpoint.

    Returns:
        (model in eval mode on the CPU, meta). For ``classify`` the model maps (B, len(leads), window_samples)
        float32 to (B, n_classes) logits; for ``segment`` (B, 1, window_samples) to (B, len(class_names), T) logits.
        Inputs are normalised as ``meta["normalisation"]`` says (an ``edge.inference.manifest.Normalisation`` dict).
    """
    ckpt = read_checkpoint(path)
    model = model_from_meta(ckpt["meta"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt["meta"]
