"""Training configuration: plain dataclasses with defaults, filled from a YAML file plus command-line overrides.

Unknown keys are errors, so every option in a config file is one the code reads. ``train/configs/*.yaml`` hold the
``cpu-small`` and ``gpu-full`` settings of each stage.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edge.interpret.beat_class import BEAT_FEATURE_NAMES

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass
class DataConfig:
    """Where data come from and how they are cut.

    Attributes:
        root: folder holding ludb/, ptbxl/, mitdb/ ... (relative paths are relative to the repository).
        pretrain_sources: sub-folders of ``root`` used as unlabelled 10 s windows for pretraining.
        max_windows_per_record: cap on 10 s windows cut from one long record (pretraining).
        window_s: window length (s); at the internal rate it must be a multiple of the encoder's downsampling.
        split_seed: seed of the LUDB record split and of the CinC 2021 record-name hash split.
        test_fraction, val_fraction: LUDB and CinC 2021 records held out for testing / validation.
        label_fraction: fraction of the labelled training records used for fine-tuning (seeded subset; beat-classify:
            of the training beats).
        classify_sources: labelled 12-lead data of the ``classify`` task, any of ``ptbxl`` (strat_fold split),
            ``cinc2021`` (``cinc2021_sample``, SNOMED-CT codes mapped to the superclasses) and ``ludb`` (diagnosis
            text mapped to the superclasses, the LUDB record split).
        beat_before_s: beat-classify: window start before the R peak (s); the window is ``window_s`` long.
        exclude_records: records kept out of pretraining, as ``<source>/<record>`` below ``root`` (``mitdb/100``,
            ``qtdb/sel100``): the subjects of a test set (MIT-BIH DS2 for ``beat-classify``).
        beat_features: beat-classify: the per-beat features the head takes besides the window, names from
            :data:`edge.interpret.beat_class.BEAT_FEATURE_NAMES` (RR context, morphology against the patient's
            dominant beat); at least one.
        beat_r_peaks: beat-classify: where the training and validation beats come from, ``reference`` (the
            ``.atr`` beats) or ``detected`` (the edge's detections labelled from the matched reference beat, Q when
            none matches: :func:`train.data.mitdb.read_beats`).
    """

    root: str = "../shared/data"
    pretrain_sources: list[str] = field(default_factory=lambda: ["ludb", "cinc2021_sample", "mitdb", "qtdb"])
    max_windows_per_record: int = 12
    window_s: float = 10.0
    split_seed: int = 0
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    label_fraction: float = 1.0
    classify_sources: list[str] = field(default_factory=lambda: ["ptbxl"])
    beat_before_s: float = 0.5
    exclude_records: list[str] = field(default_factory=list)
    beat_features: list[str] = field(default_factory=lambda: list(BEAT_FEATURE_NAMES))
    beat_r_peaks: str = "reference"

    def root_path(self) -> Path:
        root = Path(self.root)
        return root if root.is_absolute() else (REPO / root).resolve()


@dataclass
class ModelConfig:
    """Network widths (see :class:`train.models.EncoderConfig`) and heads (``head_hidden``: the beat-classify MLP's
    hidden units)."""

    widths: list[int] = field(default_factory=lambda: [32, 64, 128])
    strides: list[int] = field(default_factory=lambda: [1, 2, 5])
    blocks: int = 2
    kernel: int = 7
    stem_stride: int = 2
    proj_hidden: int = 256
    proj_dim: int = 128
    dropout: float = 0.3
    head_hidden: int = 64


@dataclass
class LossConfig:
    """Beat-SSL loss (see :mod:`train.losses`).

    Attributes:
        rhythm: rhythm-level target variant, ``hard`` | ``soft_1`` | ``soft_2``.
        rhythm_exp: exponent on the rhythm feature similarity.
        beat: beat-level variant, ``hard`` | ``soft_1`` | ``soft_2`` | ``none`` (no beat loss).
        beat_exp: exponent on the beat similarity.
        beat_weight: lambda in rhythm + lambda * beat.
        temperature, beat_temperature: softmax temperatures.
        beat_hard_threshold: beats of a record with similarity >= this share a class (hard beat positives), when
            ``beat_classes`` is ``morphology``.
        beat_classes: what makes two beats of a record the same class (the hard and ``soft_2`` beat positives):
            ``morphology`` (template similarity >= ``beat_hard_threshold``) or ``classifier`` (the same AAMI class
            from the ``beat_classifier`` engine, the paper's "Beat Classifier").
        beat_classifier: beat-classify engine folder (relative to the repository) used when ``beat_classes`` is
            ``classifier``.
        beat_window_s: (before, after) the R peak, seconds, pooled from the feature map.
        max_beats: beats per record used in the beat contrast (random subset).
    """

    rhythm: str = "soft_1"
    rhythm_exp: float = 50.0
    beat: str = "hard"
    beat_exp: float = 50.0
    beat_weight: float = 1.0
    temperature: float = 0.1
    beat_temperature: float = 0.1
    beat_hard_threshold: float = 0.95
    beat_classes: str = "morphology"
    beat_classifier: str = "engines/beat-cls"
    beat_window_s: list[float] = field(default_factory=lambda: [0.25, 0.45])
    max_beats: int = 12


@dataclass
class AugmentConfig:
    """3KG views (pretraining) and light amplitude augmentation (fine-tuning).

    Attributes:
        max_angle_deg: rotation range about each axis (degrees).
        scale_max: per-axis scale range U(1, scale_max).
        invert_p: probability of using 1/scale.
        vcg_method: ``dower`` or ``kors``.
        view_leads: leads drawn (independently per view) from each augmented 12-lead view; 12 = all.
        r_jitter_samples: beat-classify: each training window is shifted by a uniform integer in ``± this`` (samples
            at the internal rate), as the edge's detected R peaks sit a few samples off the reference ones.
    """

    max_angle_deg: float = 45.0
    scale_max: float = 1.5
    invert_p: float = 0.5
    vcg_method: str = "dower"
    view_leads: int = 1
    r_jitter_samples: int = 3


@dataclass
class OptimConfig:
    """Optimiser and budget.

    Attributes:
        lr: peak AdamW learning rate; cosine decay to 0 after ``warmup_steps``.
        weight_decay: AdamW weight decay.
        batch_size: items per step and process.
        epochs: passes over the training set.
        max_minutes: wall-clock cap (min) on the loop; the run stops cleanly and checkpoints when reached.
        grad_clip: max gradient norm (0 = off).
        encoder_lr_scale: learning-rate multiplier of a pretrained encoder (``run.init`` set) while fine-tuning; an
            encoder trained from scratch always learns at the full rate.
        freeze_encoder: fine-tuning trains the new head / decoder only; the encoder's weights stay as initialised
            (pretrained, or random from scratch) while its batch-norm statistics still follow the fine-tuning data.
        encoder_frozen_epochs: a pretrained encoder (``run.init`` set) learns at rate 0 for this many first epochs
            while the new head / decoder trains, then at its normal rate (linear probing then fine-tuning, LP-FT:
            a random head's first gradients do not distort the pretrained features). 0 = off; ignored from scratch.
    """

    lr: float = 3e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    epochs: int = 20
    warmup_steps: int = 50
    max_minutes: float = 14.0
    grad_clip: float = 1.0
    encoder_lr_scale: float = 1.0
    freeze_encoder: bool = False
    encoder_frozen_epochs: int = 0


@dataclass
class RunConfig:
    """Run bookkeeping.

    Attributes:
        out_dir: where checkpoints and metrics go (relative to the repository).
        seed: seeds Python, NumPy and torch.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        amp: bfloat16 autocast on CUDA.
        init: checkpoint whose encoder initialises fine-tuning ("" = from scratch).
        resume: continue from ``out_dir/last.pt`` when it exists.
        log_every: steps between log lines.
        eval_every: epochs between validation passes.
        num_workers: DataLoader worker processes.
        min_wave_ms: predicted waves shorter than this are dropped when scoring boundaries (segmentation).
    """

    out_dir: str = "runs/default"
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    init: str = ""
    resume: bool = True
    log_every: int = 10
    eval_every: int = 1
    num_workers: int = 0
    min_wave_ms: float = 20.0


@dataclass
class Config:
    """A whole training run: ``task`` is ``pretrain``, ``classify``, ``segment`` or ``beat-classify``."""

    task: str = "pretrain"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def out_path(self) -> Path:
        out = Path(self.run.out_dir)
        return out if out.is_absolute() else REPO / out


def _merge(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown config key {where + key!r}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config key {where + key!r} must be a mapping")
            _merge(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, value)


def resolve(name_or_path: str) -> Path:
    """A config name (``cpu-small-pretrain``) in train/configs, or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    named = CONFIG_DIR / f"{name_or_path}.yaml"
    if named.exists():
        return named
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"no config {name_or_path!r} (a YAML path or one of: {known})")


def load(name_or_path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults <- YAML file <- overrides (nested dicts, e.g. ``{"optim": {"epochs": 3}}``)."""
    cfg = Config()
    if name_or_path:
        _merge(cfg, yaml.safe_load(resolve(name_or_path).read_text()) or {}, "")
    _merge(cfg, overrides or {}, "")
    return cfg


def set_dotted(overrides: dict[str, Any], dotted: str, value: Any) -> None:
    """Put ``value`` at ``a.b.c`` in a nested override dict."""
    *parents, leaf = dotted.split(".")
    node = overrides
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def as_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict (for checkpoints and metrics files)."""
    return dataclasses.asdict(cfg)
