"""3KG augmentation (Gopal et al. 2021): rotate and scale the heart vector, project back to 12 leads.

The transform is purely spatial (a 3 x 3 matrix applied at every sample), so beat positions and every other time
index are unchanged; the R peaks found on the raw record stay valid for each augmented view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from train.vcg import DOWER, eight_to_twelve, inverse_matrix, twelve_to_eight


@dataclass(frozen=True)
class ThreeKG:
    """Parameters of the 3KG view generator.

    Attributes:
        max_angle_deg: rotation about each of x, y, z drawn from U(-max, max) (degrees).
        scale_max: per-axis scale drawn from U(1, scale_max) (dimensionless) ...
        invert_p: ... and replaced by its reciprocal with this probability.
        vcg_method: ``"dower"`` (inverse Dower) or ``"kors"`` for the 12-lead -> VCG step.
    """

    max_angle_deg: float = 45.0
    scale_max: float = 1.5
    invert_p: float = 0.5
    vcg_method: str = "dower"

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """A random (3, 3) spatial transform S @ Rz @ Ry @ Rx."""
        ax, ay, az = np.deg2rad(rng.uniform(-self.max_angle_deg, self.max_angle_deg, size=3))
        rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
        ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
        rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
        scale = rng.uniform(1.0, self.scale_max, size=3)
        scale = np.where(rng.random(3) < self.invert_p, 1.0 / scale, scale)
        return np.diag(scale) @ rz @ ry @ rx

    def __call__(self, ecg12: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One augmented view of a (12, n) ECG in mV (LEADS_12 order); returns (12, n) float32 mV."""
        to_leads = DOWER @ self.matrix(rng) @ inverse_matrix(self.vcg_method)  # (8, 8)
        return eight_to_twelve(to_leads @ twelve_to_eight(ecg12)).astype(np.float32)


def amplitude_view(
    ecg: np.ndarray, rng: np.random.Generator, scale_max: float = 1.5, invert_p: float = 0.5
) -> np.ndarray:
    """Fallback view for records without the eight independent leads: per-lead 3KG-style scaling only.

    Each lead is multiplied by s ~ U(1, scale_max), replaced by 1/s with probability ``invert_p``. (leads, n) mV in
    and out.
    """
    scale = rng.uniform(1.0, scale_max, size=(ecg.shape[0], 1))
    scale = np.where(rng.random((ecg.shape[0], 1)) < invert_p, 1.0 / scale, scale)
    return (ecg * scale).astype(np.float32)
