"""12-lead ECG <-> vectorcardiogram (VCG) transforms (Dower and inverse Dower, or Kors).

A VCG is the 3-D heart vector (X, Y, Z) over time. The eight independent leads (I, II, V1..V6, order of
``edge.ecg.LEADS_8``) are a linear image of it (Dower et al. 1980); the inverse Dower matrix (Edenbrandt & Pahlm 1988)
or the Kors regression matrix (Kors et al. 1990) maps them back. The four other limb leads follow from I and II
(Einthoven / Goldberger). All functions take arrays shaped ``(leads, samples)`` in mV and return the same unit.
"""

from __future__ import annotations

import numpy as np

from edge.ecg import LEADS_8, LEADS_12

#: Dower matrix, rows in LEADS_8 order (I, II, V1..V6), columns X, Y, Z: lead = D @ vcg.
DOWER: np.ndarray = np.array(
    [
        [0.632, -0.235, 0.059],
        [0.235, 1.066, -0.132],
        [-0.515, 0.157, -0.917],
        [0.044, 0.164, -1.387],
        [0.882, 0.098, -1.277],
        [1.213, 0.127, -0.601],
        [1.125, 0.127, -0.086],
        [0.831, 0.076, 0.230],
    ]
)

#: Inverse Dower matrix (Edenbrandt & Pahlm 1988), rows X, Y, Z, columns in LEADS_8 order: vcg = Di @ leads8.
INVERSE_DOWER: np.ndarray = np.array(
    [
        [0.156, -0.010, -0.172, -0.074, 0.122, 0.231, 0.239, 0.194],
        [-0.227, 0.887, 0.057, -0.019, -0.106, -0.022, 0.041, 0.048],
        [0.022, 0.102, -0.229, -0.310, -0.246, -0.063, 0.055, 0.108],
    ]
)

#: Kors regression matrix (Kors et al. 1990), rows X, Y, Z, columns in LEADS_8 order.
KORS: np.ndarray = np.array(
    [
        [0.38, -0.07, -0.13, 0.05, -0.01, 0.14, 0.06, 0.54],
        [-0.07, 0.93, 0.06, -0.02, -0.05, 0.06, -0.17, 0.13],
        [0.11, -0.23, -0.43, -0.06, -0.14, -0.20, -0.11, 0.31],
    ]
)

_INDEX_8_IN_12 = [LEADS_12.index(lead) for lead in LEADS_8]


def inverse_matrix(method: str) -> np.ndarray:
    """The (3, 8) leads-to-VCG matrix: ``"dower"`` (inverse Dower) or ``"kors"``."""
    if method == "dower":
        return INVERSE_DOWER
    if method == "kors":
        return KORS
    raise ValueError(f"unknown VCG method {method!r} (use 'dower' or 'kors')")


def twelve_to_eight(ecg12: np.ndarray) -> np.ndarray:
    """Select the eight independent leads (LEADS_8 order) from a (12, n) array in LEADS_12 order."""
    return ecg12[_INDEX_8_IN_12]


def eight_to_twelve(ecg8: np.ndarray) -> np.ndarray:
    """Complete (8, n) independent leads to (12, n) in LEADS_12 order (III, aVR, aVL, aVF from I and II)."""
    lead_i, lead_ii = ecg8[0], ecg8[1]
    limb = np.stack(
        [lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2]
    )
    return np.concatenate([limb, ecg8[2:]], axis=0)


def leads_to_vcg(ecg12: np.ndarray, method: str = "dower") -> np.ndarray:
    """(12, n) ECG in mV -> (3, n) VCG (X, Y, Z) in mV."""
    return inverse_matrix(method) @ twelve_to_eight(ecg12)


def vcg_to_leads(vcg: np.ndarray) -> np.ndarray:
    """(3, n) VCG in mV -> (12, n) ECG in mV via the Dower matrix and Einthoven / Goldberger."""
    return eight_to_twelve(DOWER @ vcg)
