"""Beat-SSL networks: a lead-shared 1-D ResNet encoder, the two projectors, a classification head and a U-Net decoder.

The encoder sees one lead at a time (input (N, 1, T)) with weights shared across leads, so one pretrained encoder
serves 12-lead classification (per-lead maps fused by the head) and single-lead segmentation alike. It keeps a temporal
feature map at 1/``downsampling`` of the input rate; T must be a multiple of ``downsampling`` (20 with the defaults, so
10 s at 250 Hz = 2500 samples works). Every ``forward`` is plain tensor-in / tensor-out and exports to ONNX.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    """Encoder shape.

    Attributes:
        widths: channels of each stage.
        strides: temporal stride of each stage (after the stem).
        blocks: residual blocks per stage.
        kernel: convolution kernel length (samples at that stage's rate).
        stem_stride: stride of the first convolution.
    """

    widths: tuple[int, ...] = (32, 64, 128)
    strides: tuple[int, ...] = (1, 2, 5)
    blocks: int = 2
    kernel: int = 7
    stem_stride: int = 2

    @property
    def downsampling(self) -> int:
        """Input samples per feature-map column."""
        return self.stem_stride * math.prod(self.strides)


class ResBlock(nn.Module):
    """Two convolutions with batch norm and an identity (or 1x1 strided) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, kernel: int) -> None:
        super().__init__()
        pad = kernel // 2
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.short = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm1d(c_out))
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(h)) + self.short(x))


class Encoder(nn.Module):
    """Single-lead 1-D ResNet: (N, 1, T) -> list of feature maps, one per distinct resolution (finest first)."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.widths[0]
        self.stem = nn.Sequential(
            nn.Conv1d(1, c0, 2 * cfg.kernel + 1, stride=cfg.stem_stride, padding=cfg.kernel, bias=False),
            nn.BatchNorm1d(c0),
            nn.ReLU(),
        )
        stages, c_in = [], c0
        for width, stride in zip(cfg.widths, cfg.strides, strict=True):
            blocks = [ResBlock(c_in, width, stride, cfg.kernel)]
            blocks += [ResBlock(width, width, 1, cfg.kernel) for _ in range(cfg.blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = cfg.widths[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(x)
        feats = [h]
        for stage, stride in zip(self.stages, self.cfg.strides, strict=True):
            h = stage(h)
            if stride == 1:
                feats[-1] = h
            else:
                feats.append(h)
        return feats


def lead_maps(encoder: Encoder, x: torch.Tensor) -> torch.Tensor:
    """Run the shared encoder on every lead: (B, L, T) -> last feature map (B, L, C, T / downsampling)."""
    b, n_leads, t = x.shape
    fmap = encoder(x.reshape(b * n_leads, 1, t))[-1]
    return fmap.reshape(b, n_leads, fmap.shape[1], fmap.shape[2])


def roi_pool(
    fmap: torch.Tensor, item: torch.Tensor, start: torch.Tensor, stop: torch.Tensor, downsampling: int
) -> torch.Tensor:
    """Average-pool beat windows from a feature map.

    Args:
        fmap: (B, C, T') feature map, column j covering input samples [j * downsampling, (j + 1) * downsampling).
        item: (k,) batch index of each beat.
        start, stop: (k,) beat window in input samples, stop exclusive.
        downsampling: input samples per column.

    Returns:
        (k, C): mean over the columns that overlap [start, stop) (at least one column).
    """
    n_cols = fmap.shape[-1]
    first = torch.div(start, downsampling, rounding_mode="floor").clamp(0, n_cols - 1)
    last = torch.div(stop + downsampling - 1, downsampling, rounding_mode="floor").clamp(max=n_cols)
    last = torch.maximum(last, first + 1)
    cols = torch.arange(n_cols, device=fmap.device)
    weights = ((cols[None, :] >= first[:, None]) & (cols[None, :] < last[:, None])).to(fmap.dtype)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.einsum("kt,kct->kc", weights, fmap[item])


def projector(c_in: int, hidden: int, out: int) -> nn.Sequential:
    """Two-layer MLP projection head (g_r or g_b)."""
    return nn.Sequential(nn.Linear(c_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


class PretrainModel(nn.Module):
    """Encoder f with the rhythm projector g_r and the beat projector g_b."""

    def __init__(self, encoder: Encoder, proj_hidden: int = 256, proj_dim: int = 128) -> None:
        super().__init__()
        self.encoder = encoder
        self.g_r = projector(encoder.out_channels, proj_hidden, proj_dim)
        self.g_b = projector(encoder.out_channels, proj_hidden, proj_dim)

    def forward(
        self, x: torch.Tensor, item: torch.Tensor, start: torch.Tensor, stop: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, T) views and beat windows -> (B, proj_dim) rhythm and (k, proj_dim) beat embeddings."""
        fmap = self.feature_map(x)
        return self.rhythm(fmap), self.beats(fmap, item, start, stop)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, T) view -> lead-averaged feature map (B, C, T')."""
        return lead_maps(self.encoder, x).mean(dim=1)

    def rhythm(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, C, T') -> (B, proj_dim) record embedding."""
        return self.g_r(fmap.mean(dim=-1))

    def beats(self, fmap: torch.Tensor, item: torch.Tensor, start: torch.Tensor, stop: torch.Tensor) -> torch.Tensor:
        """RoI-pooled beat windows -> (k, proj_dim) beat embeddings."""
        return self.g_b(roi_pool(fmap, item, start, stop, self.encoder.cfg.downsampling))


class Classifier(nn.Module):
    """Encoder + head: (B, L, T) -> (B, n_classes) logits; per-lead mean and max pooled maps, concatenated."""

    def __init__(self, encoder: Encoder, n_leads: int, n_classes: int, dropout: float = 0.3) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * n_leads * encoder.out_channels, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmap = lead_maps(self.encoder, x)
        pooled = torch.cat([fmap.mean(dim=-1), fmap.amax(dim=-1)], dim=-1)
        return self.head(pooled.flatten(1))


class BeatClassifier(nn.Module):
    """Encoder + beat features -> AAMI beat logits: ``forward(x, features)``, (B, 1, T) beat windows and (B, K) raw
    beat features (the manifest's ``feature_names``, from :data:`edge.interpret.beat_class.BEAT_FEATURE_NAMES`: RR
    context and morphology against the patient's dominant beat) -> (B, n_classes).

    The window's feature map is RoI-pooled over ``roi`` (input samples ``[start, stop)`` around the R peak, the beat
    window the Beat-SSL beat contrast pools), concatenated with the standardised beat features (``feature_mean`` /
    ``feature_std``, buffers fitted on the training beats, so the exported model takes raw features) and fed to a
    two-layer MLP.
    """

    def __init__(
        self, encoder: Encoder, n_features: int, n_classes: int, roi: tuple[int, int], hidden: int = 64,
        dropout: float = 0.3,
    ) -> None:  # fmt: skip
        super().__init__()
        self.encoder = encoder
        self.register_buffer("roi", torch.tensor(roi, dtype=torch.long))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.head = nn.Sequential(
            nn.Linear(encoder.out_channels + n_features, hidden), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(hidden, n_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        fmap = self.encoder(x)[-1]
        b = fmap.shape[0]
        item = torch.arange(b, device=fmap.device)
        start, stop = self.roi[0].expand(b), self.roi[1].expand(b)
        pooled = roi_pool(fmap, item, start, stop, self.encoder.cfg.downsampling)
        rr = (features - self.feature_mean) / self.feature_std
        return self.head(torch.cat([pooled, rr.to(pooled.dtype)], dim=1))


def _conv_block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
        nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(),
    )


class Segmenter(nn.Module):
    """Encoder + U-Net decoder: (B, 1, T) -> (B, n_classes, T) per-sample logits."""

    def __init__(self, encoder: Encoder, n_classes: int, final_width: int = 16) -> None:
        super().__init__()
        cfg = encoder.cfg
        self.encoder = encoder
        # Channels and upsampling factors, coarsest resolution first.
        skip_widths = [w for w, s in zip(cfg.widths, cfg.strides, strict=True) if s > 1]
        levels = [cfg.widths[0]] + skip_widths  # finest (T / stem_stride) ... coarsest
        factors = [s for s in cfg.strides if s > 1]
        ups, blocks = [], []
        for i in range(len(levels) - 1, 0, -1):
            ups.append(nn.ConvTranspose1d(levels[i], levels[i - 1], factors[i - 1], stride=factors[i - 1]))
            blocks.append(_conv_block(2 * levels[i - 1], levels[i - 1], cfg.kernel))
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        self.up_in = nn.ConvTranspose1d(levels[0], final_width, cfg.stem_stride, stride=cfg.stem_stride)
        self.final = _conv_block(final_width + 1, final_width, cfg.kernel)
        self.head = nn.Conv1d(final_width, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        h = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1]), strict=True):
            h = block(torch.cat([up(h), skip], dim=1))
        h = self.final(torch.cat([self.up_in(h), x], dim=1))
        return self.head(h)


def build_model(task: str, model: dict, n_leads: int, n_classes: int) -> nn.Module:
    """The network of a task (``pretrain`` | ``classify`` | ``segment`` | ``beat-classify``) from a
    ``train.config.ModelConfig`` dict; beat-classify's dict also holds ``n_features`` (RR features) and ``roi``
    (``[start, stop)`` input samples of the pooled beat window)."""
    enc = Encoder(
        EncoderConfig(
            widths=tuple(model["widths"]),
            strides=tuple(model["strides"]),
            blocks=model["blocks"],
            kernel=model["kernel"],
            stem_stride=model["stem_stride"],
        )
    )
    if task == "pretrain":
        return PretrainModel(enc, model["proj_hidden"], model["proj_dim"])
    if task == "classify":
        return Classifier(enc, n_leads, n_classes, model["dropout"])
    if task == "segment":
        return Segmenter(enc, n_classes)
    if task == "beat-classify":
        roi = (int(model["roi"][0]), int(model["roi"][1]))
        return BeatClassifier(enc, model["n_features"], n_classes, roi, model["head_hidden"], model["dropout"])
    raise ValueError(f"unknown task {task!r}")
