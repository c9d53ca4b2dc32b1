"""Beat-SSL contrastive losses: a soft-target InfoNCE and the target builders for the rhythm and beat levels.

Variants (the paper names them but does not define soft_1 / soft_2; the choice made here is in docs/method.md):

- ``hard``: the partner view (and, at beat level, beats of the same class) is the positive, everything else a
  negative. At rhythm level this is exactly NT-Xent (SimCLR).
- ``soft_1``: soft positives. Target = 1 for the partner, ``similarity ** exp`` for every other candidate; the
  cross-entropy is taken against the row-normalised target.
- ``soft_2``: soft false-negative attenuation. Target as in ``hard``; each other candidate's term in the softmax
  denominator is weighted by ``1 - similarity ** exp``, so near-duplicates are not pushed away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

VARIANTS: tuple[str, ...] = ("hard", "soft_1", "soft_2")


def soft_target_infonce(
    z: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
    valid: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy between softmax(cosine / temperature) and the row-normalised targets.

    Args:
        z: (m, d) embeddings (any scale; they are L2-normalised here).
        targets: (m, m) non-negative target weights; rows with no positive are ignored.
        temperature: softmax temperature (dimensionless).
        valid: (m, m) bool, candidates each row may compare against; self-pairs are always excluded.
        weights: (m, m) positive multipliers of each candidate's term in the softmax denominator.

    Returns:
        Scalar mean loss over rows that have at least one positive target.
    """
    z = F.normalize(z.float(), dim=1)
    m = z.shape[0]
    logits = z @ z.T / temperature
    mask = ~torch.eye(m, dtype=torch.bool, device=z.device)
    if valid is not None:
        mask &= valid
    if weights is not None:
        logits = logits + torch.log(weights.float().clamp_min(1e-6))
    log_prob = torch.log_softmax(logits.masked_fill(~mask, float("-inf")), dim=1)
    targets = targets.float() * mask
    row_sum = targets.sum(dim=1, keepdim=True)
    has_positive = row_sum.squeeze(1) > 0
    p = targets / row_sum.clamp_min(1e-12)
    per_row = -torch.where(p > 0, p * log_prob, torch.zeros_like(log_prob)).sum(dim=1)
    if not has_positive.any():
        return z.sum() * 0.0
    return per_row[has_positive].mean()


def pair_targets(
    partner: torch.Tensor, similarity: torch.Tensor, variant: str, exp: float, hard_positive: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Targets and denominator weights for one contrast.

    Args:
        partner: (m, m) bool, the other view of the same item (always a positive).
        similarity: (m, m) precomputed feature similarity in [0, 1].
        variant: one of VARIANTS.
        exp: exponent applied to the similarity (the paper's best is 50).
        hard_positive: (m, m) bool, extra positives for ``hard`` / ``soft_2`` (same beat class); None = none.

    Returns:
        (targets, weights) for :func:`soft_target_infonce`; weights is None except for ``soft_2``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown loss variant {variant!r}, expected one of {VARIANTS}")
    hard = partner if hard_positive is None else partner | hard_positive
    soft = similarity.clamp(0.0, 1.0) ** exp
    if variant == "hard":
        return hard.float(), None
    if variant == "soft_1":
        return torch.where(partner, torch.ones_like(soft), soft), None
    return hard.float(), torch.where(hard, torch.ones_like(soft), 1.0 - soft)


def rhythm_loss(
    z1: torch.Tensor, z2: torch.Tensor, similarity: torch.Tensor, variant: str, exp: float, temperature: float
) -> torch.Tensor:
    """Record-level contrast over the 2N views of a batch (SimCLR layout: rows 0..N-1 view 1, N..2N-1 view 2).

    Args:
        z1, z2: (n, d) projections of the two views of n records.
        similarity: (n, n) rhythm-feature similarity of the records, in [0, 1].
    """
    n = z1.shape[0]
    idx = torch.arange(2 * n, device=z1.device)
    partner = (idx[:, None] - idx[None, :]).abs() == n
    sim2 = similarity.repeat(2, 2)
    targets, weights = pair_targets(partner, sim2, variant, exp)
    return soft_target_infonce(torch.cat([z1, z2]), targets, temperature, weights=weights)


def beat_loss(
    b1: torch.Tensor,
    b2: torch.Tensor,
    record: torch.Tensor,
    similarity: torch.Tensor,
    variant: str,
    exp: float,
    temperature: float,
    hard_threshold: float,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Heartbeat-level contrast among the beats of each record (beats of other records are not compared).

    Args:
        b1, b2: (k, d) projections of the same k beats seen in view 1 and view 2.
        record: (k,) int, record index of each beat.
        similarity: (k, k) beat-feature similarity in [0, 1] (entries across records are ignored).
        hard_threshold: beats of one record with similarity >= this are the same beat class (hard positives).
        labels: (k,) int beat class of each beat (a beat classifier's); when given, beats of one record with the
            same label are the same beat class instead of the similarity threshold.
    """
    k = b1.shape[0]
    rec2 = record.repeat(2)
    same_record = rec2[:, None] == rec2[None, :]
    idx = torch.arange(2 * k, device=b1.device)
    partner = (idx[:, None] - idx[None, :]).abs() == k
    sim2 = similarity.repeat(2, 2)
    if labels is None:
        same_class = same_record & (sim2 >= hard_threshold)
    else:
        lab2 = labels.repeat(2)
        same_class = same_record & (lab2[:, None] == lab2[None, :])
    targets, weights = pair_targets(partner, sim2, variant, exp, hard_positive=same_class)
    return soft_target_infonce(torch.cat([b1, b2]), targets * same_record, temperature, same_record, weights)
