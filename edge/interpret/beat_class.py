"""The decision rule of beat classification: one class per beat from its class probabilities and the manifest's
per-class thresholds. The edge (every published beat) and training (threshold tuning, evaluation) both use it."""

from __future__ import annotations

import numpy as np


def decide(probabilities: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(n, C)`` probabilities and ``(C,)`` thresholds → ``(n,)`` class indices, ``argmax(p / threshold)``: a class
    the model under-calls can be favoured by a threshold below 1 (all 1: plain argmax)."""
    p = np.asarray(probabilities, dtype=float)
    t = np.maximum(np.asarray(thresholds, dtype=float), 1e-6)
    return np.argmax(p / t[None, :], axis=-1)
