"""The three training tasks behind the one loop: data, loss, evaluation and checkpoint metadata of each.

A task owns its model, its training Dataset and collate function, ``loss(model, batch)`` and
``evaluate(model, part)``; :mod:`train.loop` does the rest. ``pretrain`` is Beat-SSL (rhythm + beat contrast on 3KG
views), ``segment`` is per-sample P / QRS / T labelling on LUDB, ``classify`` is PTB-XL superdiagnostic multilabel
(on PTB-XL, and optionally CinC 2021 and LUDB with their diagnoses mapped to the superclasses), ``beat-classify`` is
AAMI N / S / V / F / Q heartbeat classification on MIT-BIH (trained on DS1, tested on DS2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ, LEADS_8, LEADS_12, PTBXL_SUPERCLASSES, WAVE_CLASSES
from edge.interpret.beat_class import beat_features, decide, feature_columns
from train import beat_metrics, losses
from train.augment import ThreeKG, amplitude_view
from train.beat_targets import load_beat_classifier, window_beat_classes
from train.checkpoint import read_checkpoint
from train.config import REPO, Config, ModelConfig, as_dict
from train.data import cinc2021, ludb, ludb_dx, mitdb, ptbxl
from train.data.normalise import NORMALISATION, model_input
from train.data.rate import read_12_lead
from train.data.windows import folder_windows
from train.distributed import gather_rows
from train.features import beat_templates, cosine_similarity01, reference_lead, rhythm_features, standardise
from train.metrics import multilabel_report, segmentation_report, tune_thresholds
from train.models import build_model


def _window_samples(cfg: Config) -> int:
    n = int(round(cfg.data.window_s * INTERNAL_FS_HZ))
    ds = cfg.model.stem_stride * int(np.prod(cfg.model.strides))
    if n % ds:
        raise ValueError(f"window of {n} samples is not a multiple of the encoder downsampling {ds}")
    return n


def _subset(items: list, fraction: float, seed: int) -> list:
    """A seeded random ``fraction`` of ``items`` (at least one), in original order."""
    if fraction >= 1.0:
        return items
    k = max(1, round(fraction * len(items)))
    keep = sorted(np.random.default_rng(seed).choice(len(items), size=k, replace=False))
    return [items[i] for i in keep]


def _rng(index: int) -> np.random.Generator:
    """Fresh randomness per item and call: differs across DataLoader workers, epochs and repeated calls."""
    return np.random.default_rng([torch.initial_seed() % 2**32, index, int(torch.randint(2**31, ()).item())])


class Task:
    """Interface of a task; subclasses fill in the data and the three methods."""

    name: str
    model: nn.Module
    train_set: Dataset

    def __init__(self, cfg: Config) -> None:
        if cfg.run.init:  # the pretrained encoder fixes the architecture (its ModelConfig fields)
            stored = read_checkpoint(cfg.run.init)["meta"]["model"]
            fields = as_dict(cfg)["model"]
            cfg.model = ModelConfig(**{**fields, **{k: v for k, v in stored.items() if k in fields}})
        self.cfg = cfg
        self.window_samples = _window_samples(cfg)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, part: str) -> dict[str, Any]:
        """Metrics of ``model`` on ``"val"`` or ``"test"`` ({} where the task has no labels)."""
        return {}

    def finalise(self, model: nn.Module) -> None:
        """Fit post-training quantities (decision thresholds) on validation data."""

    def meta(self) -> dict[str, Any]:
        """Checkpoint metadata (see :func:`train.checkpoint.load_checkpoint`)."""
        return {
            "task": self.name,
            "model": as_dict(self.cfg)["model"],
            "config": as_dict(self.cfg),
            "fs_hz": INTERNAL_FS_HZ,
            "window_samples": self.window_samples,
            "normalisation": NORMALISATION.to_dict(),
        }

    def init_encoder(self) -> None:
        """Load the encoder of ``cfg.run.init`` (a pretrain or fine-tune checkpoint) into this task's model."""
        if not self.cfg.run.init:
            return
        state = read_checkpoint(self.cfg.run.init)["state_dict"]
        enc = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
        self.model.encoder.load_state_dict(enc)


# --------------------------------------------------------------------------------------------------- pretraining
def held_out(cfg: Config) -> set[Path]:
    """Records never seen in pretraining (paths, no extension): the LUDB val/test split, PTB-XL folds 9 and 10 and
    the CinC 2021 records whose name hashes to val/test (labelled or not), so that no classify or segment test
    record was seen by the encoder; plus every ``data.exclude_records`` entry."""
    root = cfg.data.root_path()
    out: set[Path] = {root / name for name in cfg.data.exclude_records}
    if (root / "ludb" / "RECORDS").exists():
        parts = ludb.split(
            ludb.record_names(root / "ludb"), cfg.data.split_seed, cfg.data.test_fraction, cfg.data.val_fraction
        )
        out |= {root / "ludb" / "data" / n for n in parts["val"] + parts["test"]}
    if (root / "ptbxl" / "ptbxl_database.csv").exists():
        rows = ptbxl.read_index(root / "ptbxl")
        out |= {r.path for r in ptbxl.rows_for(rows, "val") + ptbxl.rows_for(rows, "test")}
    cinc = root / CLASSIFY_FOLDERS["cinc2021"]
    if (cinc / "labels.csv").exists():
        d = cfg.data
        out |= {
            cinc / row["source"] / row["record"]
            for row in cinc2021.read_labels(cinc)
            if cinc2021.part_of(row["record"], d.split_seed, d.test_fraction, d.val_fraction) != "train"
        }
    return out


class PretrainSet(Dataset):
    """Two augmented views of each window, with the beats to contrast (indices into the window's R peaks)."""

    def __init__(self, windows: list, cfg: Config) -> None:
        self.windows = windows
        self.cfg = cfg
        a = cfg.augment
        self.three_kg = ThreeKG(a.max_angle_deg, a.scale_max, a.invert_p, a.vcg_method)

    def __len__(self) -> int:
        return len(self.windows)

    def _view(self, w: Any, rng: np.random.Generator) -> np.ndarray:
        full = set(LEADS_8) <= set(w.leads)
        x = self.three_kg(w.signal_mv, rng) if full else amplitude_view(w.signal_mv, rng, self.cfg.augment.scale_max)
        n_leads = min(self.cfg.augment.view_leads, x.shape[0])
        return x[np.sort(rng.choice(x.shape[0], size=n_leads, replace=False))]

    def __getitem__(self, i: int) -> dict[str, Any]:
        w, rng = self.windows[i], _rng(i)
        n_peaks = len(w.r_peaks)
        beats = np.sort(rng.choice(n_peaks, size=min(n_peaks, self.cfg.loss.max_beats), replace=False))
        return {"index": i, "v1": self._view(w, rng), "v2": self._view(w, rng), "beats": beats}


class PretrainTask(Task):
    """Beat-SSL: rhythm contrast over the 2N views plus lambda x beat contrast within each record."""

    name = "pretrain"

    def __init__(self, cfg: Config, windows: list | None = None) -> None:
        super().__init__(cfg)
        before_s, after_s = cfg.loss.beat_window_s
        self.before, self.after = int(round(before_s * INTERNAL_FS_HZ)), int(round(after_s * INTERNAL_FS_HZ))
        if windows is None:
            root = cfg.data.root_path()
            windows = folder_windows(
                root, cfg.data.pretrain_sources, cfg.data.window_s, cfg.data.max_windows_per_record, held_out(cfg)
            )
        n = self.window_samples
        kept = []
        for w in windows:
            peaks = w.r_peaks[(w.r_peaks >= self.before) & (w.r_peaks + self.after <= n)]
            if len(peaks) >= 2 and w.signal_mv.shape[1] == n:
                kept.append(type(w)(w.source, w.record, w.leads, w.signal_mv, peaks))
        if not kept:
            raise ValueError("no pretraining window with at least two complete beats")
        self.windows = kept
        self.rhythm = standardise(
            np.stack([rhythm_features(w.signal_mv, w.r_peaks, w.leads, INTERNAL_FS_HZ) for w in kept])
        ).astype(np.float32)
        self.templates = [
            beat_templates(w.signal_mv[reference_lead(w.leads)], w.r_peaks, INTERNAL_FS_HZ, (before_s, after_s))
            for w in kept
        ]
        self.beat_labels = self._beat_labels(kept)
        self.train_set = PretrainSet(kept, cfg)
        self.model = build_model("pretrain", as_dict(cfg)["model"], 1, 0)
        self.init_encoder()

    def _beat_labels(self, windows: list) -> list[np.ndarray] | None:
        """Per window, the beat classifier's class of each R peak (``loss.beat_classes: classifier``), else None."""
        c = self.cfg.loss
        if c.beat_classes == "morphology":
            return None
        if c.beat_classes != "classifier":
            raise ValueError(f"loss.beat_classes must be 'morphology' or 'classifier', got {c.beat_classes!r}")
        folder = Path(c.beat_classifier)
        engine = load_beat_classifier(folder if folder.is_absolute() else REPO / folder)
        return [window_beat_classes(engine, w.signal_mv[reference_lead(w.leads)], w.r_peaks) for w in windows]

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        b = len(items)
        idx = np.array([it["index"] for it in items])
        x = model_input(np.stack([it["v1"] for it in items] + [it["v2"] for it in items]))
        peaks = [self.windows[it["index"]].r_peaks[it["beats"]] for it in items]
        templates = np.concatenate([self.templates[it["index"]][it["beats"]] for it in items])
        record = np.concatenate([np.full(len(p), k) for k, p in enumerate(peaks)])
        centre = np.concatenate(peaks)
        labels = {} if self.beat_labels is None else {
            "beat_label": torch.from_numpy(np.concatenate([self.beat_labels[it["index"]][it["beats"]] for it in items]))
        }  # fmt: skip
        return {
            **labels,
            "x": torch.from_numpy(x),
            "item": torch.from_numpy(np.concatenate([record, record + b])),
            "start": torch.from_numpy(np.tile(centre - self.before, 2)),
            "stop": torch.from_numpy(np.tile(centre + self.after, 2)),
            "record": torch.from_numpy(record),
            "rhythm_feat": torch.from_numpy(self.rhythm[idx]),
            "beat_sim": torch.from_numpy(cosine_similarity01(templates, templates).astype(np.float32)),
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.cfg.loss
        z_r, z_b = model(batch["x"], batch["item"], batch["start"], batch["stop"])
        b, k = z_r.shape[0] // 2, batch["record"].shape[0]
        # Under torchrun the rhythm contrast spans the views of every rank's batch (global negatives).
        feats = gather_rows(batch["rhythm_feat"]).cpu().numpy()
        sim = torch.from_numpy(cosine_similarity01(feats, feats).astype(np.float32)).to(z_r.device)
        z1, z2 = gather_rows(z_r[:b]), gather_rows(z_r[b:])
        rhythm = losses.rhythm_loss(z1, z2, sim, c.rhythm, c.rhythm_exp, c.temperature)
        if c.beat == "none":
            return rhythm + 0.0 * z_b.sum(), {"rhythm": rhythm.item()}
        beat = losses.beat_loss(
            z_b[:k], z_b[k:], batch["record"], batch["beat_sim"], c.beat, c.beat_exp, c.beat_temperature,
            c.beat_hard_threshold, batch.get("beat_label"),
        )  # fmt: skip
        return rhythm + c.beat_weight * beat, {"rhythm": rhythm.item(), "beat": beat.item()}

    def meta(self) -> dict[str, Any]:
        sources = sorted({w.source for w in self.windows})
        return {**super().meta(), "leads": list(LEADS_12), "class_names": [], "thresholds": [], "sources": sources}


# ---------------------------------------------------------------------------------------------------- segmentation
class LeadSet(Dataset):
    """(record, lead) pairs of LUDB as single-lead samples; labels outside the annotated span are IGNORE."""

    def __init__(self, records: list[ludb.LudbRecord]) -> None:
        self.items = [(r, k) for r in records for k in range(len(LEADS_12))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec, k = self.items[i]
        labels = rec.labels[k].astype(np.int64)
        lo, hi = rec.spans[k]
        labels[:lo] = ludb.IGNORE
        labels[hi + 1 :] = ludb.IGNORE
        return {"x": rec.signal_mv[k : k + 1], "y": labels}


class SegmentTask(Task):
    """Per-sample P / QRS / T segmentation of single leads (LUDB, split by record)."""

    name = "segment"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        root = cfg.data.root_path() / "ludb"
        names = ludb.record_names(root)
        self.parts = ludb.split(names, cfg.data.split_seed, cfg.data.test_fraction, cfg.data.val_fraction)
        self.parts["train"] = _subset(self.parts["train"], cfg.data.label_fraction, cfg.run.seed)
        self.records = {n: ludb.load_record(root, n) for part in self.parts.values() for n in part}
        if next(iter(self.records.values())).signal_mv.shape[1] != self.window_samples:
            raise ValueError(f"LUDB windows are not {self.window_samples} samples long")
        self.train_set = LeadSet([self.records[n] for n in self.parts["train"]])
        self.model = build_model("segment", as_dict(cfg)["model"], 1, len(WAVE_CLASSES))
        self.init_encoder()

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        x = model_input(np.stack([it["x"] for it in items]))
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(np.stack([it["y"] for it in items]))}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.cross_entropy(model(batch["x"]).float(), batch["y"], ignore_index=ludb.IGNORE)
        return loss, {}

    @torch.no_grad()
    def predict(self, model: nn.Module, signals_mv: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, T) single-lead mV windows -> (n, T) int predicted WAVE_CLASSES indices."""
        device = next(model.parameters()).device
        out = []
        for lo in range(0, len(signals_mv), batch_size):
            x = torch.from_numpy(model_input(signals_mv[lo : lo + batch_size, None])).to(device)
            out.append(model(x).argmax(dim=1).cpu().numpy())
        return np.concatenate(out)

    def evaluate(self, model: nn.Module, part: str) -> dict[str, Any]:
        recs = [self.records[n] for n in self.parts[part]]
        if not recs:
            return {}
        preds = self.predict(model, np.concatenate([r.signal_mv for r in recs]))
        report = segmentation_report(
            refs=[lab for r in recs for lab in r.labels],
            preds=list(preds),
            spans=[tuple(s) for r in recs for s in r.spans],
            class_names=WAVE_CLASSES,
            fs_hz=INTERNAL_FS_HZ,
            tolerance_ms=150.0,
            min_wave_ms=self.cfg.run.min_wave_ms,
        )
        return {"records": len(recs), "leads": len(preds), **report}

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "leads": list(LEADS_12),
            "class_names": list(WAVE_CLASSES),
            "thresholds": [],
            "min_wave_ms": self.cfg.run.min_wave_ms,
            "split": self.parts,
        }


# -------------------------------------------------------------------------------------------------- classification
#: Folder below ``data.root`` of each ``data.classify_sources`` entry.
CLASSIFY_FOLDERS: dict[str, str] = {"ptbxl": "ptbxl", "cinc2021": "cinc2021_sample", "ludb": "ludb"}


class LabelledRecord(NamedTuple):
    """One labelled 12-lead record of a classify source and its WFDB path (no extension)."""

    source: str
    record: str
    labels: np.ndarray
    path: Path


class RecordSet(Dataset):
    """Labelled 12-lead records loaded into memory: (12, T) mV at the internal rate, a multi-hot label, a source."""

    def __init__(self, signals: list[np.ndarray], labels: list[np.ndarray], sources: list[str]) -> None:
        self.signals, self.labels, self.sources = signals, labels, sources

    def __len__(self) -> int:
        return len(self.signals)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.signals[i], "y": self.labels[i]}


def classify_records(cfg: Config, source: str) -> dict[str, list[LabelledRecord]]:
    """The labelled records of one classify source by split part ``train`` / ``val`` / ``test``.

    PTB-XL: strat_fold 1-8 / 9 / 10. CinC 2021: the seeded record-name hash split. LUDB: :func:`ludb.split` (the
    segmentation task's split, so LUDB test records stay test records). Records without a label are left out.
    """
    d = cfg.data
    if source not in CLASSIFY_FOLDERS:
        raise ValueError(f"unknown classify source {source!r}, expected some of {sorted(CLASSIFY_FOLDERS)}")
    root = d.root_path() / CLASSIFY_FOLDERS[source]
    if source == "ptbxl":
        rows = ptbxl.read_index(root)
        return {
            part: [
                LabelledRecord(source, str(r.ecg_id), r.labels, r.path)
                for r in ptbxl.rows_for(rows, part)
            ]
            for part in ptbxl.FOLDS
        }
    if source == "cinc2021":
        parts = cinc2021.split(cinc2021.read_index(root), d.split_seed, d.test_fraction, d.val_fraction)
        return {
            part: [LabelledRecord(source, r.record, r.labels, r.path) for r in rows]
            for part, rows in parts.items()
        }
    parts = ludb.split(ludb.record_names(root), d.split_seed, d.test_fraction, d.val_fraction)
    labels = {n: ludb_dx.diagnosis_label(root, n) for names in parts.values() for n in names}
    return {
        part: [
            LabelledRecord(source, n, labels[n], root / "data" / n)
            for n in names
            if labels[n] is not None
        ]
        for part, names in parts.items()
    }


class ClassifyTask(Task):
    """PTB-XL superclass multilabel classification on ``data.classify_sources`` (PTB-XL, CinC 2021, LUDB).

    Each source keeps its own split (see :func:`classify_records`); the parts of all sources are pooled. Every
    record's first window is used, edge-padded when the record is shorter.
    """

    name = "classify"

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        records: dict[str, list[LabelledRecord]] = {part: [] for part in ptbxl.FOLDS}
        for source in cfg.data.classify_sources:
            for part, items in classify_records(cfg, source).items():
                records[part] += items
        if not any(records.values()):
            raise ValueError(f"no labelled record of {cfg.data.classify_sources} under {cfg.data.root_path()}")
        records["train"] = _subset(records["train"], cfg.data.label_fraction, cfg.run.seed)
        self.records = {part: [f"{r.source}/{r.record}" for r in items] for part, items in records.items()}
        self.sets = {
            part: RecordSet(
                [self._fit(read_12_lead(r.path)) for r in items], [r.labels for r in items], [r.source for r in items]
            )
            for part, items in records.items()
        }
        self.train_set = self.sets["train"]
        self.thresholds = np.full(len(PTBXL_SUPERCLASSES), 0.5)
        self.threshold_source = "default 0.5"
        self.model = build_model("classify", as_dict(cfg)["model"], len(LEADS_12), len(PTBXL_SUPERCLASSES))
        self.init_encoder()

    def _fit(self, x: np.ndarray) -> np.ndarray:
        """The first window of (12, n): cropped, or padded with each lead's last value when shorter."""
        n = self.window_samples
        return x[:, :n] if x.shape[1] >= n else np.pad(x, ((0, 0), (0, n - x.shape[1])), mode="edge")

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        x = model_input(np.stack([it["x"] for it in items]))
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(np.stack([it["y"] for it in items]))}

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return F.binary_cross_entropy_with_logits(model(batch["x"]).float(), batch["y"]), {}

    @torch.no_grad()
    def scores(self, model: nn.Module, part: str) -> tuple[np.ndarray, np.ndarray]:
        """(n, 5) labels and sigmoid scores of one split part."""
        data = self.sets[part]
        device = next(model.parameters()).device
        x = torch.from_numpy(model_input(np.stack(data.signals))).to(device)
        return np.stack(data.labels), torch.sigmoid(model(x).float()).cpu().numpy()

    def finalise(self, model: nn.Module) -> None:
        part = "val" if len(self.sets["val"]) else "train"
        self.thresholds = tune_thresholds(*self.scores(model, part))
        self.threshold_source = f"max F1 on {part}"

    def evaluate(self, model: nn.Module, part: str) -> dict[str, Any]:
        """Pooled report of ``part`` plus, per source, its record and positive counts and its own macro scores."""
        if not len(self.sets[part]):
            return {"records": 0}
        y, s = self.scores(model, part)

        def positives(labels: np.ndarray) -> dict[str, int]:
            return dict(zip(PTBXL_SUPERCLASSES, labels.sum(axis=0).astype(int).tolist(), strict=True))

        sources = np.array(self.sets[part].sources)
        per_source = {}
        for source in dict.fromkeys(self.sets[part].sources):
            k = sources == source
            report = multilabel_report(y[k], s[k], self.thresholds, PTBXL_SUPERCLASSES)
            per_source[source] = {
                "records": int(k.sum()),
                "positives": positives(y[k]),
                "macro_auroc": report["macro_auroc"],
                "auroc_classes_defined": report["auroc_classes_defined"],
                "macro_f1": report["macro_f1"],
            }
        return {
            "records": len(y),
            **multilabel_report(y, s, self.thresholds, PTBXL_SUPERCLASSES),
            "positives": positives(y),
            "sources": per_source,
        }

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "leads": list(LEADS_12),
            "class_names": list(PTBXL_SUPERCLASSES),
            "thresholds": [float(t) for t in self.thresholds],
            "thresholds_from": self.threshold_source,
            "split": self.records,
        }


# --------------------------------------------------------------------------------------------- beat classification
#: Largest class weight of the beat-classify loss (Q has a handful of DS1 training beats).
MAX_CLASS_WEIGHT = 20.0


def training_label(label: int) -> int:
    """The class a beat is trained towards: its reference class; Q (unclassifiable) for a detection that matches
    no reference beat (:data:`train.beat_metrics.NO_BEAT`)."""
    return AAMI_CLASSES.index("Q") if label == beat_metrics.NO_BEAT else int(label)


class BeatSet(Dataset):
    """Beats of MIT-BIH records (reference or detected, :func:`train.data.mitdb.read_beats`): a single-lead window
    around R (shifted by up to ``± jitter`` samples, a fresh shift per call), the beat's features and its training
    class (:func:`training_label`)."""

    def __init__(
        self, records: list[mitdb.BeatRecord], features: list[np.ndarray], items: np.ndarray, before: int, window: int,
        jitter: int,
    ) -> None:  # fmt: skip
        self.records, self.features, self.items = records, features, items
        self.before, self.window, self.jitter = before, window, jitter

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        k, beat = self.items[i]
        rec = self.records[k]
        shift = int(_rng(i).integers(-self.jitter, self.jitter + 1)) if self.jitter else 0
        lo = rec.r_samples[beat] - self.before + shift
        return {"x": rec.signal_mv[None, lo : lo + self.window], "features": self.features[k][beat],
                "y": training_label(rec.labels[beat])}  # fmt: skip


class BeatClassifyTask(Task):
    """AAMI beat classes of MIT-BIH beats, inter-patient (de Chazal 2004): train on DS1 records, select
    (thresholds, per-epoch validation) on other DS1 records, test on DS2 records; every record on one side. The
    beats are the reference ones or the edge's detections (``data.beat_r_peaks``).

    Input: ``data.window_s`` of the record's preferred lead starting ``data.beat_before_s`` before the R peak, plus
    the ``data.beat_features`` of each beat (:func:`edge.interpret.beat_class.beat_features`: RR context and
    morphology against the patient's dominant beat). Class imbalance: cross-entropy
    weighted by ``1 / sqrt(class share)`` of the training beats (capped at :data:`MAX_CLASS_WEIGHT`).
    ``data.label_fraction`` keeps a seeded random fraction of the training beats.
    """

    name = "beat-classify"

    def __init__(
        self, cfg: Config, train_records: tuple[str, ...] = mitdb.TRAIN_RECORDS,
        val_records: tuple[str, ...] = mitdb.VAL_RECORDS, test_records: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(cfg)
        root = cfg.data.root_path() / "mitdb"
        if test_records is None:
            test_records = tuple(r for r in mitdb.DS2 if (root / f"{r}.hea").exists())
        if not set(train_records) | set(val_records) <= set(mitdb.DS1) or set(train_records) & set(val_records):
            raise ValueError("beat-classify trains and validates on disjoint DS1 records only")
        if not set(test_records) <= set(mitdb.DS2):
            raise ValueError("beat-classify tests on DS2 records only")
        self.parts = {"train": list(train_records), "val": list(val_records), "test": list(test_records)}
        self.before = int(round(cfg.data.beat_before_s * INTERNAL_FS_HZ))
        before_s, after_s = cfg.loss.beat_window_s
        self.roi = (self.before - round(before_s * INTERNAL_FS_HZ), self.before + round(after_s * INTERNAL_FS_HZ))
        if not 0 <= self.roi[0] < self.roi[1] <= self.window_samples:
            raise ValueError(f"the beat window {self.roi} (samples) is outside the {self.window_samples}-sample input")
        if not cfg.data.beat_features:
            raise ValueError("beat-classify needs at least one beat feature (data.beat_features)")
        self.feature_names = tuple(cfg.data.beat_features)
        columns = feature_columns(self.feature_names)
        mitdb.check_r_peaks(cfg.data.beat_r_peaks, "data.beat_r_peaks")  # before any record is read
        self.records = {
            n: mitdb.read_beats(root / n, cfg.data.beat_r_peaks) for part in self.parts.values() for n in part
        }
        self.features = {
            n: beat_features(r.r_times_s, r.signal_mv, r.r_samples, INTERNAL_FS_HZ)[:, columns].astype(np.float32)
            for n, r in self.records.items()
        }
        self.sets = {part: self._beat_set(names, 0) for part, names in self.parts.items()}
        train = self._beat_set(self.parts["train"], cfg.augment.r_jitter_samples)
        train.items = np.asarray(_subset(list(train.items), cfg.data.label_fraction, cfg.run.seed)).reshape(-1, 2)
        self.train_set = train
        labels = np.array([training_label(train.records[k].labels[b]) for k, b in train.items])
        counts = np.bincount(labels, minlength=len(AAMI_CLASSES))
        self.class_counts = counts
        share = np.maximum(counts, 1) / counts.sum()
        weights = np.minimum(MAX_CLASS_WEIGHT, np.sqrt(share.max() / share))
        self.class_weights = torch.tensor(weights, dtype=torch.float32)
        self.thresholds = np.ones(len(AAMI_CLASSES))
        self.threshold_source = "default 1 (argmax)"
        model = {**as_dict(cfg)["model"], "n_features": len(self.feature_names), "roi": list(self.roi)}
        self.model = build_model("beat-classify", model, 1, len(AAMI_CLASSES))
        feats = np.stack([train.features[k][b] for k, b in train.items])
        self.model.feature_mean.copy_(torch.from_numpy(feats.mean(axis=0)))
        self.model.feature_std.copy_(torch.from_numpy(feats.std(axis=0) + 1e-3))
        self.init_encoder()

    def _beat_set(self, names: list[str], jitter: int) -> BeatSet:
        """The scored beats (EC57 label) of ``names`` whose window, shifted by up to ``± jitter``, is inside."""
        recs = [self.records[n] for n in names]
        items = []
        for k, rec in enumerate(recs):
            r = rec.r_samples
            ok = (rec.labels >= 0) & (r - self.before - jitter >= 0)
            ok &= r - self.before + self.window_samples + jitter <= len(rec.signal_mv)
            items += [(k, b) for b in np.flatnonzero(ok)]
        arr = np.asarray(items, dtype=np.int64).reshape(-1, 2)
        return BeatSet(recs, [self.features[n] for n in names], arr, self.before, self.window_samples, jitter)

    def collate(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "x": torch.from_numpy(model_input(np.stack([it["x"] for it in items]))),
            "features": torch.from_numpy(np.stack([it["features"] for it in items])),
            "y": torch.from_numpy(np.array([it["y"] for it in items], dtype=np.int64)),
        }

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["x"], batch["features"]).float()
        return F.cross_entropy(logits, batch["y"], weight=self.class_weights.to(logits.device)), {}

    @torch.no_grad()
    def probabilities(self, model: nn.Module, part: str, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(n,) reference labels and (n, 5) softmax probabilities of the scored beats of one part."""
        data = self.sets[part]
        device = next(model.parameters()).device
        out = []
        for lo in range(0, len(data), batch_size):
            batch = self.collate([data[i] for i in range(lo, min(lo + batch_size, len(data)))])
            out.append(torch.softmax(model(batch["x"].to(device), batch["features"].to(device)).float(), 1).cpu())
        labels = np.array([data.records[k].labels[b] for k, b in data.items], dtype=np.int64)
        return labels, torch.cat(out).numpy() if out else np.zeros((0, len(AAMI_CLASSES)))

    def finalise(self, model: nn.Module) -> None:
        self.thresholds = beat_metrics.tune_thresholds(*self.probabilities(model, "val"))
        self.threshold_source = "max F1(VEB) + F1(SVEB) on the DS1 validation records"

    def evaluate(self, model: nn.Module, part: str) -> dict[str, Any]:
        """Gross EC57 scores, the confusion matrix and per-record VEB / SVEB scores of ``part`` (reference beats)."""
        if not len(self.sets[part]):
            return {"records": 0}
        labels, probs = self.probabilities(model, part)
        pred = decide(probs, self.thresholds)
        matrix = beat_metrics.detection_confusion(labels, pred)
        scores = beat_metrics.ec57_scores(matrix)
        record_of = np.array([k for k, _ in self.sets[part].items])
        per_record = {}
        for k, name in enumerate(self.parts[part]):
            s = beat_metrics.ec57_scores(beat_metrics.detection_confusion(labels[record_of == k], pred[record_of == k]))
            per_record[name] = {"veb": s["veb"], "sveb": s["sveb"]}
        headline = {f"{c}_{m}": scores[c][m] for c in ("veb", "sveb") for m in ("se", "pp")}
        return {"records": len(self.parts[part]), "beats": len(labels), **headline, **scores,
                "confusion": matrix.tolist(), "per_record": per_record}  # fmt: skip

    def meta(self) -> dict[str, Any]:
        leads = sorted({r.lead for n, r in self.records.items() if n in self.parts["train"]})
        return {
            **super().meta(),
            "model": {**as_dict(self.cfg)["model"], "n_features": len(self.feature_names), "roi": list(self.roi)},
            "leads": leads,
            "r_offset_samples": self.before,
            "class_names": list(AAMI_CLASSES),
            "multilabel": False,
            "thresholds": [float(t) for t in self.thresholds],
            "thresholds_from": self.threshold_source,
            "decision": "argmax of softmax probability / threshold",
            "feature_names": list(self.feature_names),
            "class_weights": [float(w) for w in self.class_weights],
            "train_beats_per_class": dict(zip(AAMI_CLASSES, self.class_counts.tolist(), strict=True)),
            "split": self.parts,
        }


def make_task(cfg: Config) -> Task:
    """The task named by ``cfg.task``."""
    tasks = {
        "pretrain": PretrainTask, "segment": SegmentTask, "classify": ClassifyTask, "beat-classify": BeatClassifyTask,
    }  # fmt: skip
    if cfg.task not in tasks:
        raise ValueError(f"unknown task {cfg.task!r}, expected one of {sorted(tasks)}")
    return tasks[cfg.task](cfg)
