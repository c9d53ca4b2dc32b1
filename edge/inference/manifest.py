"""The engine manifest (``manifest.json``, schema 1): the contract between ``train build-engine`` and the edge.

An engine folder holds ``model.onnx`` (always), ``model.plan`` (a TensorRT engine, optional) and ``manifest.json``,
which says what the model expects and what it returns: the task, the leads and their order, the sampling rate, the
window and hop, how raw windows (mV) are normalised, the tensor names and shapes, the class names, the decision
thresholds, the metrics measured when it was built, and the sha256 of every file. :meth:`Manifest.load` validates
all of it and raises :class:`ManifestError` with a one-line message naming the file; the edge never runs an engine
whose manifest does not validate. See ``docs/engines.md`` for the schema field by field.

This module is numpy-only: the edge imports it without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.ecg import AAMI_CLASSES, WAVE_CLASSES

#: The manifest schema version this code reads and writes.
SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"

TASKS = ("classify", "segment", "beat-classify")
PRECISIONS = ("fp32", "fp16", "int8")
#: Precision of ``model.onnx``: ``fp32`` (the export) or ``int8`` (static QDQ quantisation, ``--onnx-int8``).
ONNX_PRECISIONS = ("fp32", "int8")
#: How logits become probabilities: ``sigmoid`` per class (multilabel) or ``softmax`` over the class axis (axis 1).
ACTIVATIONS = ("sigmoid", "softmax")
NORMALISATIONS = ("none", "zscore", "fixed")
#: Name of the features input when the manifest does not give ``feature_input_name``.
DEFAULT_FEATURE_INPUT = "features"


class ManifestError(ValueError):
    """An engine folder whose manifest or files do not validate; the message is one line and names the file."""


class LeadMismatchError(ValueError):
    """A stream's leads do not provide what an engine needs (reported on the device's errors topic)."""


@dataclass(frozen=True)
class Normalisation:
    """How a raw window (mV) is turned into model input, per lead.

    Attributes:
        kind: ``"none"`` (input as is), ``"zscore"`` (per lead and per window: subtract the window's mean and divide
            by its standard deviation plus ``eps``) or ``"fixed"`` (subtract ``mean[l]`` and divide by ``std[l]``,
            both in mV, one value per input channel).
        eps: added to the per-window standard deviation (mV) so that flat windows stay finite (``zscore`` only).
        mean: per-channel offsets (mV) for ``fixed``; empty otherwise.
        std: per-channel scales (mV) for ``fixed``; empty otherwise.
    """

    kind: str = "zscore"
    eps: float = 1e-6
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in NORMALISATIONS:
            raise ValueError(f"normalisation kind {self.kind!r} is not one of {NORMALISATIONS}")
        if self.kind == "fixed" and (not self.mean or len(self.mean) != len(self.std)):
            raise ValueError("fixed normalisation needs mean and std of the same non-zero length")
        if self.kind == "fixed" and min(self.std) <= 0:
            raise ValueError("fixed normalisation needs std > 0")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalisation:
        """Build from the manifest's ``normalisation`` object (unknown keys are an error)."""
        unknown = set(d) - {"kind", "eps", "mean", "std"}
        if unknown:
            raise ValueError(f"unknown normalisation keys {sorted(unknown)}")
        return cls(
            kind=str(d.get("kind", "zscore")),
            eps=float(d.get("eps", 1e-6)),
            mean=tuple(float(v) for v in d.get("mean", ())),
            std=tuple(float(v) for v in d.get("std", ())),
        )

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``normalisation`` object (only the keys that matter for ``kind``)."""
        if self.kind == "none":
            return {"kind": "none"}
        if self.kind == "zscore":
            return {"kind": "zscore", "eps": self.eps}
        return {"kind": "fixed", "mean": list(self.mean), "std": list(self.std)}


def normalise(windows_mv: np.ndarray, spec: Normalisation) -> np.ndarray:
    """Normalise raw windows the way an engine expects; the one implementation used at build and at run time.

    Args:
        windows_mv: ``(B, C, T)`` windows in mV (any float dtype).
        spec: the engine's :class:`Normalisation`.

    Returns:
        ``(B, C, T)`` float32, C-contiguous.
    """
    x = np.asarray(windows_mv, dtype=np.float32)
    if x.ndim != 3:
        raise ValueError(f"windows must be (batch, channels, samples), got shape {x.shape}")
    if spec.kind == "zscore":
        mean = x.mean(axis=2, keepdims=True)
        std = x.std(axis=2, keepdims=True)
        x = (x - mean) / (std + np.float32(spec.eps))
    elif spec.kind == "fixed":
        if x.shape[1] != len(spec.mean):
            raise ValueError(f"fixed normalisation has {len(spec.mean)} channels, windows have {x.shape[1]}")
        mean = np.asarray(spec.mean, dtype=np.float32)[None, :, None]
        std = np.asarray(spec.std, dtype=np.float32)[None, :, None]
        x = (x - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """Everything the edge needs to know about an engine; see ``docs/engines.md``.

    Attributes:
        name: engine name (the folder name by convention, e.g. ``"wave-seg"``).
        task: ``"classify"`` (``(B, C, T)`` -> ``(B, n_classes)`` logits), ``"segment"`` (``(B, 1, T)`` ->
            ``(B, len(WAVE_CLASSES), T)`` logits, one lead at a time, any lead) or ``"beat-classify"`` (one window
            of ``T`` samples per beat, ``r_offset_samples`` of them before the R peak, ``(B, C, T)`` ->
            ``(B, len(AAMI_CLASSES))`` logits, softmax).
        leads: input leads in channel order (classify, beat-classify: usually the one lead it reads); for segment,
            the leads it was trained on (it runs on any).
        fs_hz: sampling rate of the input windows (Hz).
        window_samples: window length (samples at ``fs_hz``).
        hop_samples: step between consecutive windows (samples at ``fs_hz``).
        normalisation: how raw mV windows become model input (:func:`normalise`).
        input_name: name of the ONNX / TensorRT input tensor.
        input_shape: input shape with ``None`` for the dynamic batch axis, e.g. ``[None, 12, 2500]``.
        output_names: names of the output tensors; the first is what :meth:`Engine.infer` returns.
        activation: ``"sigmoid"`` or ``"softmax"`` — how the logits become probabilities.
        class_names: output classes in output order.
        thresholds: per-class decision thresholds on probabilities (classify; tuned on the validation split);
            empty for segment (argmax over classes); beat-classify: empty (argmax) or one per class.
        metrics: what was measured when the engine was built (free-form JSON, say which split).
        files: file name -> ``{"sha256": hex, "bytes": n}``; ``model.onnx`` always, ``model.plan`` optionally.
        opset: ONNX opset of ``model.onnx``.
        precision: precision of ``model.plan`` (``fp32`` when there is none).
        max_batch: largest batch of the TensorRT optimisation profile (``1..max_batch``); the edge splits bigger
            batches.
        created_by: tool and version that built the engine.
        created_at: UTC build time, ISO 8601.
        tensorrt: for a plan, ``{"version": ..., "device": ...}`` it was built with (plans are tied to both).
        onnx_precision: precision of ``model.onnx``, one of :data:`ONNX_PRECISIONS`: ``fp32`` (the default, and
            what a manifest without the key means) or ``int8`` (weights per channel and activations quantised, QDQ
            nodes, for ONNX Runtime on CPU). A plan is always built from the fp32 export.
        feature_names: names of the per-window features of the model's second input, in column order; empty (the
            default) for a one-input model. Features are passed to the model as given (not normalised).
        feature_input_name: name of the second input tensor, ``(B, len(feature_names))`` float32 (used only when
            ``feature_names`` is not empty).
        r_offset_samples: beat-classify only (required there): samples of the window before the R peak.
        schema: manifest schema version (:data:`SCHEMA_VERSION`).
    """

    name: str
    task: str
    leads: tuple[str, ...]
    fs_hz: float
    window_samples: int
    hop_samples: int
    normalisation: Normalisation
    input_name: str
    input_shape: tuple[int | None, ...]
    output_names: tuple[str, ...]
    activation: str
    class_names: tuple[str, ...]
    thresholds: dict[str, float]
    metrics: dict[str, Any]
    files: dict[str, dict[str, Any]]
    opset: int
    precision: str
    max_batch: int
    created_by: str
    created_at: str
    tensorrt: dict[str, str] = field(default_factory=dict)
    onnx_precision: str = "fp32"
    feature_names: tuple[str, ...] = ()
    feature_input_name: str = DEFAULT_FEATURE_INPUT
    r_offset_samples: int | None = None
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise ManifestError(problem)

    def _problem(self) -> str | None:
        """The first inconsistency in the fields, or None."""
        if self.schema != SCHEMA_VERSION:
            return f"unknown manifest schema version {self.schema} (this code reads {SCHEMA_VERSION})"
        if self.task not in TASKS:
            return f"task {self.task!r} is not one of {TASKS}"
        if self.precision not in PRECISIONS:
            return f"precision {self.precision!r} is not one of {PRECISIONS}"
        if self.onnx_precision not in ONNX_PRECISIONS:
            return f"onnx_precision {self.onnx_precision!r} is not one of {ONNX_PRECISIONS}"
        if self.activation not in ACTIVATIONS:
            return f"activation {self.activation!r} is not one of {ACTIVATIONS}"
        if not self.leads:
            return "leads is empty"
        if not (self.fs_hz > 0 and math.isfinite(self.fs_hz)):
            return f"fs_hz must be > 0, got {self.fs_hz}"
        if self.window_samples < 1 or self.hop_samples < 1 or self.max_batch < 1:
            return "window_samples, hop_samples and max_batch must be >= 1"
        if len(self.input_shape) != 3 or self.input_shape[0] is not None:
            return f"input_shape must be [null, channels, samples], got {list(self.input_shape)}"
        channels = 1 if self.task == "segment" else len(self.leads)
        if tuple(self.input_shape[1:]) != (channels, self.window_samples):
            return f"input_shape {list(self.input_shape)} does not match [null, {channels}, {self.window_samples}]"
        if not self.output_names:
            return "output_names is empty"
        if self.task == "segment" and self.class_names != WAVE_CLASSES:
            return f"segment class_names must be {list(WAVE_CLASSES)}, got {list(self.class_names)}"
        if self.task == "classify" and set(self.thresholds) != set(self.class_names):
            return "thresholds must give exactly one value per class name"
        if not all(0.0 <= v <= 1.0 for v in self.thresholds.values()):
            return f"thresholds must be probabilities in [0, 1], got {self.thresholds}"
        beat_problem = self._beat_problem()
        if beat_problem:
            return beat_problem
        if len(set(self.feature_names)) != len(self.feature_names) or not all(self.feature_names):
            return f"feature_names must be distinct non-empty names, got {list(self.feature_names)}"
        if not self.feature_input_name or self.feature_input_name == self.input_name:
            return f"feature_input_name {self.feature_input_name!r} must be a non-empty name other than input_name"
        if self.normalisation.kind == "fixed" and len(self.normalisation.mean) != channels:
            return f"fixed normalisation has {len(self.normalisation.mean)} channels, the input has {channels}"
        if ONNX_FILE not in self.files:
            return f"files has no {ONNX_FILE}"
        if set(self.files) - {ONNX_FILE, PLAN_FILE}:
            return f"files lists unknown files {sorted(set(self.files) - {ONNX_FILE, PLAN_FILE})}"
        return None

    def _beat_problem(self) -> str | None:
        """The first inconsistency in the beat-classify fields (``r_offset_samples`` for the other tasks), or None."""
        if self.task != "beat-classify":
            if self.r_offset_samples is not None:
                return f"r_offset_samples applies to beat-classify engines only, not {self.task}"
            return None
        if self.r_offset_samples is None:
            return "r_offset_samples is required for a beat-classify engine"
        if not 0 <= self.r_offset_samples < self.window_samples:
            return f"r_offset_samples must be in [0, {self.window_samples}), got {self.r_offset_samples}"
        if self.activation != "softmax":
            return f"a beat-classify engine's activation must be 'softmax', got {self.activation!r}"
        if self.class_names != AAMI_CLASSES:
            return f"beat-classify class_names must be {list(AAMI_CLASSES)}, got {list(self.class_names)}"
        if self.thresholds and set(self.thresholds) != set(self.class_names):
            return "beat-classify thresholds must be empty (argmax) or give exactly one value per class name"
        return None

    # ------------------------------------------------------------------------------------------------ helpers
    @property
    def channels(self) -> int:
        """Input channels: ``len(leads)`` for classify and beat-classify, 1 for segment."""
        return int(self.input_shape[1])  # type: ignore[arg-type]

    @property
    def n_features(self) -> int:
        """Columns of the features input (0: the model has one input)."""
        return len(self.feature_names)

    @property
    def threshold_vector(self) -> np.ndarray:
        """``(len(class_names),)`` thresholds in class order, 1 for a class without one (empty: argmax), as
        :func:`edge.interpret.beat_class.decide` takes them."""
        return np.array([self.thresholds.get(c, 1.0) for c in self.class_names])

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """Shape of :meth:`Engine.infer`'s result with ``None`` for the batch: ``[null, n_classes]`` (classify,
        beat-classify) or ``[null, n_classes, window_samples]`` (segment)."""
        if self.task == "segment":
            return (None, len(self.class_names), self.window_samples)
        return (None, len(self.class_names))

    @property
    def has_plan(self) -> bool:
        """Whether the folder ships a TensorRT plan."""
        return PLAN_FILE in self.files

    def lead_indices(self, stream_leads: tuple[str, ...] | list[str]) -> tuple[int, ...]:
        """Which channels of a stream feed this engine, in the engine's order.

        Classify and beat-classify: the index in ``stream_leads`` of each of :attr:`leads` (all must be present).
        Segment: every stream lead (each is fed on its own). Lead names must already be canonical
        (:func:`edge.ecg.canonical_lead`).

        Raises:
            LeadMismatchError: a classify engine's lead is missing from the stream (the message lists them).
        """
        stream = list(stream_leads)
        if self.task == "segment":
            return tuple(range(len(stream)))
        missing = [lead for lead in self.leads if lead not in stream]
        if missing:
            raise LeadMismatchError(
                f"engine {self.name!r} needs leads {list(self.leads)}; the stream has {stream} (missing {missing})"
            )
        return tuple(stream.index(lead) for lead in self.leads)

    # ------------------------------------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``manifest.json`` (``schema`` first; the optional keys only when they are set:
        ``feature_names`` and ``feature_input_name`` for a two-input model, ``r_offset_samples`` for beat-classify)."""
        d = asdict(self)
        d["normalisation"] = self.normalisation.to_dict()
        for key in ("leads", "input_shape", "output_names", "class_names", "feature_names"):
            d[key] = list(d[key])
        if not self.feature_names:
            del d["feature_names"], d["feature_input_name"]
        if self.r_offset_samples is None:
            del d["r_offset_samples"]
        return {"schema": d.pop("schema"), **d}

    def write(self, folder: Path | str) -> Path:
        """Write ``folder/manifest.json`` (pretty, sorted as declared) and return its path."""
        path = Path(folder) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: Path | str, verify_files: bool = True) -> Manifest:
        """Read and validate ``folder/manifest.json``.

        Args:
            folder: the engine folder.
            verify_files: also check that every listed file exists and matches its sha256.

        Raises:
            ManifestError: anything wrong, in one line naming the file.
        """
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(f"{path}: no such file (is {folder} an engine folder?)")
        try:
            raw = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"{path}: not valid JSON ({e})") from e
        try:
            manifest = cls.from_dict(raw)
        except ManifestError as e:
            raise ManifestError(f"{path}: {e}") from e
        if verify_files:
            for name, entry in manifest.files.items():
                fpath = Path(folder) / name
                if not fpath.is_file():
                    raise ManifestError(f"{fpath}: listed in {MANIFEST_FILE} but missing")
                digest = sha256_file(fpath)
                if digest != entry["sha256"]:
                    raise ManifestError(
                        f"{fpath}: sha256 mismatch (manifest {entry['sha256'][:12]}…, file {digest[:12]}…); "
                        "the file was changed after the build"
                    )
        return manifest

    @classmethod
    def from_dict(cls, raw: Any) -> Manifest:
        """Validate a parsed ``manifest.json`` object and build the manifest.

        Raises:
            ManifestError: unknown schema version, missing or unknown keys, wrong types, inconsistent values.
        """
        if not isinstance(raw, dict):
            raise ManifestError("the manifest must be a JSON object")
        if "schema" not in raw:
            raise ManifestError("missing key 'schema'")
        if raw["schema"] != SCHEMA_VERSION:
            raise ManifestError(f"unknown manifest schema version {raw['schema']!r} (this code reads {SCHEMA_VERSION})")
        missing = [k for k in _TYPES if k not in raw and k not in _OPTIONAL]
        if missing:
            raise ManifestError(f"missing key(s) {missing}")
        unknown = sorted(set(raw) - set(_TYPES) - {"schema"})
        if unknown:
            raise ManifestError(f"unknown key(s) {unknown}")
        for key, types in _TYPES.items():
            if key in raw and not _is(raw[key], types):
                names = " or ".join(t.__name__ for t in types)
                raise ManifestError(f"key {key!r} must be {names}, got {type(raw[key]).__name__}")
        for key in ("leads", "output_names", "class_names", "feature_names"):
            if not all(isinstance(v, str) for v in raw.get(key, ())):
                raise ManifestError(f"key {key!r} must be a list of strings")
        if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in raw["input_shape"]):
            raise ManifestError("key 'input_shape' must be a list of integers or null")
        if not all(_is(v, (int, float)) for v in raw["thresholds"].values()):
            raise ManifestError("key 'thresholds' must map class names to numbers")
        for name, entry in raw["files"].items():
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64):
                raise ManifestError(f"files[{name!r}] must be an object with a 64-hex-digit 'sha256'")
        try:
            normalisation = Normalisation.from_dict(raw["normalisation"])
        except (TypeError, ValueError) as e:
            raise ManifestError(f"key 'normalisation': {e}") from e
        return cls(
            name=raw["name"],
            task=raw["task"],
            leads=tuple(raw["leads"]),
            fs_hz=float(raw["fs_hz"]),
            window_samples=raw["window_samples"],
            hop_samples=raw["hop_samples"],
            normalisation=normalisation,
            input_name=raw["input_name"],
            input_shape=tuple(raw["input_shape"]),
            output_names=tuple(raw["output_names"]),
            activation=raw["activation"],
            class_names=tuple(raw["class_names"]),
            thresholds={k: float(v) for k, v in raw["thresholds"].items()},
            metrics=raw["metrics"],
            files=raw["files"],
            opset=raw["opset"],
            precision=raw["precision"],
            max_batch=raw["max_batch"],
            created_by=raw["created_by"],
            created_at=raw["created_at"],
            tensorrt=raw.get("tensorrt", {}),
            onnx_precision=raw.get("onnx_precision", "fp32"),
            feature_names=tuple(raw.get("feature_names", ())),
            feature_input_name=raw.get("feature_input_name", DEFAULT_FEATURE_INPUT),
            r_offset_samples=raw.get("r_offset_samples"),
            schema=raw["schema"],
        )


#: JSON type(s) of every manifest key but ``schema`` (those in :data:`_OPTIONAL` may be absent).
_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "task": (str,),
    "leads": (list,),
    "fs_hz": (int, float),
    "window_samples": (int,),
    "hop_samples": (int,),
    "normalisation": (dict,),
    "input_name": (str,),
    "input_shape": (list,),
    "output_names": (list,),
    "activation": (str,),
    "class_names": (list,),
    "thresholds": (dict,),
    "metrics": (dict,),
    "files": (dict,),
    "opset": (int,),
    "precision": (str,),
    "max_batch": (int,),
    "created_by": (str,),
    "created_at": (str,),
    "tensorrt": (dict,),
    "onnx_precision": (str,),
    "feature_names": (list,),
    "feature_input_name": (str,),
    "r_offset_samples": (int,),
}
#: Keys that may be absent (defaults: ``{}``, ``"fp32"``, ``[]``, ``"features"``, none).
_OPTIONAL = frozenset({"tensorrt", "onnx_precision", "feature_names", "feature_input_name", "r_offset_samples"})


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """``isinstance`` that does not let a JSON ``true`` pass for a number."""
    return isinstance(value, types) and not isinstance(value, bool)


def file_entry(path: Path) -> dict[str, Any]:
    """The ``files`` entry of one engine file: its sha256 and size (bytes)."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}
