"""Soft-target InfoNCE against a hand-computed NT-Xent, and the beat loss reaching the encoder."""

from __future__ import annotations

import math

import torch

from train.losses import beat_loss, rhythm_loss, soft_target_infonce
from train.models import Encoder, EncoderConfig, PretrainModel


def _hand_nt_xent() -> float:
    """Views a1=(1,0), a2=(0,1), b1=(.6,.8), b2=(.8,.6) (unit vectors; record k has views ak, bk), tau = 0.5."""
    row_a = -math.log(math.exp(1.2) / (math.exp(0.0) + math.exp(1.2) + math.exp(1.6)))
    row_b = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6) + math.exp(1.92)))
    return (2 * row_a + 2 * row_b) / 4


def test_soft_target_loss_reduces_to_nt_xent_with_hard_targets() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    zero_sim = torch.zeros(2, 2)
    expected = _hand_nt_xent()
    for variant in ("hard", "soft_1", "soft_2"):  # with zero similarity every variant is NT-Xent
        got = rhythm_loss(z1, z2, zero_sim, variant, exp=50.0, temperature=0.5).item()
        assert math.isclose(got, expected, rel_tol=1e-6), variant
    # Any similarity leaves hard targets unchanged.
    assert math.isclose(rhythm_loss(z1, z2, torch.ones(2, 2), "hard", 50.0, 0.5).item(), expected, rel_tol=1e-6)


def test_soft_targets_change_the_loss_and_follow_the_exponent() -> None:
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.8, 0.6]])
    sim = torch.full((2, 2), 0.9)
    hard = rhythm_loss(z1, z2, sim, "hard", 50.0, 0.5)
    soft_exp1 = rhythm_loss(z1, z2, sim, "soft_1", 1.0, 0.5)
    soft_exp50 = rhythm_loss(z1, z2, sim, "soft_1", 50.0, 0.5)
    assert abs(soft_exp50 - hard) < abs(soft_exp1 - hard)  # 0.9 ** 50 ~ 0.005: nearly hard


def test_row_normalised_soft_targets_give_the_expected_cross_entropy() -> None:
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    targets = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # only row 0 counts
    logits = torch.tensor([0.0, 1.0 / math.sqrt(2)]) / 0.1  # cosine of row 0 with rows 1 and 2
    log_p = torch.log_softmax(logits, dim=0)
    expected = -(0.25 * log_p[0] + 0.75 * log_p[1])
    assert torch.isclose(soft_target_infonce(z, targets, 0.1), expected)


def test_beat_loss_changes_the_encoder_gradient() -> None:
    torch.manual_seed(0)
    model = PretrainModel(Encoder(EncoderConfig(widths=(8, 16), strides=(1, 5), blocks=1)), 32, 16)
    x = torch.randn(4, 1, 500)  # 2 records x 2 views
    item = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3, 3])  # the same 5 beats in view 1 (items 0, 1) and view 2
    start = torch.tensor([50, 200, 350, 100, 300] * 2)
    stop = start + 120
    record = torch.tensor([0, 0, 0, 1, 1])
    beat_sim = torch.full((5, 5), 0.5)

    def encoder_grad(weight: float) -> torch.Tensor:
        model.zero_grad()
        z_r, z_b = model(x, item, start, stop)
        loss = rhythm_loss(z_r[:2], z_r[2:], torch.zeros(2, 2), "hard", 50.0, 0.1)
        loss = loss + weight * beat_loss(z_b[:5], z_b[5:], record, beat_sim, "hard", 50.0, 0.1, 0.95)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.encoder.parameters()])

    rhythm_only, with_beat = encoder_grad(0.0), encoder_grad(1.0)
    assert rhythm_only.abs().sum() > 0
    assert not torch.allclose(rhythm_only, with_beat)
    assert (with_beat - rhythm_only).abs().max() > 1e-4 * rhythm_only.abs().max()


def test_classifier_labels_make_same_class_beats_of_a_record_the_hard_positives() -> None:
    """beat_loss(labels=...) equals the loss whose similarity puts exactly the same-label pairs over the threshold."""
    torch.manual_seed(0)
    b1, b2 = torch.randn(5, 8), torch.randn(5, 8)
    record = torch.tensor([0, 0, 0, 1, 1])
    labels = torch.tensor([0, 2, 0, 0, 0])  # N V N | N N: beats 0 and 2 share a class, 3 and 4 too
    same = (labels[:, None] == labels[None, :]).float()
    by_labels = beat_loss(b1, b2, record, torch.full((5, 5), 0.5), "hard", 50.0, 0.1, 0.95, labels)
    by_similarity = beat_loss(b1, b2, record, same, "hard", 50.0, 0.1, 0.95)
    assert torch.isclose(by_labels, by_similarity)
    no_classes = beat_loss(b1, b2, record, torch.full((5, 5), 0.5), "hard", 50.0, 0.1, 0.95)
    assert not torch.isclose(by_labels, no_classes)  # the labels added positives
