"""Model-input normalisation: the edge's own (``edge.inference.manifest.normalise``), applied in training."""

from __future__ import annotations

import numpy as np

from edge.inference.manifest import Normalisation, normalise

#: Every model of this package sees per-lead, per-window z-scored input.
NORMALISATION = Normalisation(kind="zscore", eps=1e-3)


def model_input(windows_mv: np.ndarray) -> np.ndarray:
    """(B, C, T) or (C, T) mV -> normalised float32 of the same shape."""
    x = np.asarray(windows_mv)
    return normalise(x if x.ndim == 3 else x[None], NORMALISATION)[0 if x.ndim == 2 else slice(None)]
