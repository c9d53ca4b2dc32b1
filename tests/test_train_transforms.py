"""VCG transforms and 3KG augmentation."""

from __future__ import annotations

import numpy as np

from edge.ecg import LEADS_8, LEADS_12
from train.augment import ThreeKG
from train.vcg import DOWER, INVERSE_DOWER, eight_to_twelve, leads_to_vcg, twelve_to_eight, vcg_to_leads


def test_dower_inverse_dower_round_trip_on_the_eight_independent_leads() -> None:
    rng = np.random.default_rng(0)
    vcg = rng.normal(size=(3, 500))
    leads8 = DOWER @ vcg  # any 8-lead ECG that a heart dipole produces
    back8 = DOWER @ (INVERSE_DOWER @ leads8)
    np.testing.assert_allclose(back8, leads8, atol=2e-3 * np.abs(leads8).max())
    np.testing.assert_allclose(leads_to_vcg(vcg_to_leads(vcg)), vcg, atol=2e-3 * np.abs(vcg).max())


def test_twelve_lead_completion_follows_einthoven_and_goldberger() -> None:
    rng = np.random.default_rng(1)
    ecg8 = rng.normal(size=(8, 50))
    ecg12 = eight_to_twelve(ecg8)
    lead = {name: ecg12[i] for i, name in enumerate(LEADS_12)}
    np.testing.assert_allclose(lead["III"], lead["II"] - lead["I"])
    np.testing.assert_allclose(lead["aVR"] + lead["aVL"] + lead["aVF"], 0.0, atol=1e-12)
    np.testing.assert_allclose(twelve_to_eight(ecg12), ecg8)
    assert [LEADS_12[i] for i in range(12) if LEADS_12[i] in LEADS_8] == list(LEADS_8)


def test_3kg_keeps_beat_positions() -> None:
    """The view is a per-sample spatial map: shifting the input in time shifts the view, silent samples stay silent,
    and a beat's peak in the heart-vector magnitude stays at its sample."""
    n, peaks = 1000, [150, 420, 700]
    t = np.arange(n)
    vcg = np.zeros((3, n))
    for p, direction in zip(peaks, ([1, 0.5, -0.2], [0.3, 1, 0.1], [-0.5, 0.2, 1]), strict=True):
        vcg += np.outer(direction, np.exp(-0.5 * ((t - p) / 6.0) ** 2))
    ecg = vcg_to_leads(vcg)
    aug = ThreeKG()
    view = aug(ecg, np.random.default_rng(3))
    shifted = aug(np.roll(ecg, 37, axis=1), np.random.default_rng(3))
    np.testing.assert_allclose(shifted, np.roll(view, 37, axis=1), atol=1e-6)
    assert np.all(view[:, :100] == 0) or np.abs(view[:, :100]).max() < 1e-6 * np.abs(view).max()
    magnitude = np.linalg.norm(leads_to_vcg(view), axis=0)
    for p in peaks:
        assert abs(int(np.argmax(magnitude[p - 50 : p + 50])) + p - 50 - p) <= 1
    assert not np.allclose(view, ecg)


def test_3kg_draws_angles_and_scales_in_range() -> None:
    aug = ThreeKG(max_angle_deg=45.0, scale_max=1.5, invert_p=0.5)
    for seed in range(20):
        m = aug.matrix(np.random.default_rng(seed))
        singular = np.linalg.svd(m, compute_uv=False)  # rotation keeps lengths, so these are the scales
        assert singular.max() <= 1.5 + 1e-9 and singular.min() >= 1 / 1.5 - 1e-9
