"""Engines: checkpoint -> `train build-engine` -> edge load -> same outputs as PyTorch on real LUDB windows.

Uses real (tiny, untrained) `train.models` networks saved with `train.checkpoint.save_checkpoint`, so the round trip
goes through the same `load_checkpoint` as the shipped engines. TensorRT tests run only where tensorrt, cuda-python
and a GPU are present.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from edge.ecg import AAMI_CLASSES, LEADS_12, PTBXL_SUPERCLASSES, WAVE_CLASSES
from edge.inference import (
    EngineError,
    LeadMismatchError,
    ManifestError,
    choose_backend,
    load_engine,
    run_in_batches,
    tensorrt_unavailable_reason,
    to_probabilities,
)
from edge.inference.manifest import MANIFEST_FILE, ONNX_FILE, PLAN_FILE, Manifest, Normalisation, normalise
from train.checkpoint import load_checkpoint, save_checkpoint
from train.engine_build import (
    PLAN_MAX_PROB_DIFF,
    BuildError,
    build_engine,
    build_engine_command,
    build_engine_from_model,
    calibration_indices,
    plan_agreement,
    plan_problem,
)
from train.export import ExportCheckError, reference_beats, reference_windows, torch_logits
from train.models import build_model

TINY_MODEL = {
    "widths": [8, 16],
    "strides": [2, 5],
    "blocks": 1,
    "kernel": 7,
    "stem_stride": 2,
    "proj_hidden": 16,
    "proj_dim": 8,
    "dropout": 0.0,
}
CLS_WINDOW, SEG_WINDOW = 2500, 2000
BEAT_WINDOW, BEAT_R_OFFSET = 160, 64  # 0.64 s per beat, R at 0.256 s
BEAT_FEATURES = ("rr_prev_s", "rr_next_s", "rr_local_ratio")
TRT_REASON = tensorrt_unavailable_reason()


def _checkpoint(path: Path, task: str) -> Path:
    """A real checkpoint of a tiny untrained network (random weights, random BN statistics)."""
    import torch

    torch.manual_seed(0)
    leads = LEADS_12 if task == "classify" else ("I", "II", "V1")
    classes = PTBXL_SUPERCLASSES if task == "classify" else WAVE_CLASSES
    model = build_model(task, TINY_MODEL, len(leads), len(classes))
    for m in model.modules():  # non-trivial running statistics, so that folding BN into convs is exercised
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    meta = {
        "task": task,
        "model": TINY_MODEL,
        "leads": list(leads),
        "fs_hz": 250,
        "window_samples": CLS_WINDOW if task == "classify" else SEG_WINDOW,
        "class_names": list(classes),
        "normalisation": Normalisation(kind="zscore", eps=1e-3).to_dict(),
        "metrics": {"val": {"macro_auroc": np.float64(0.5), "auroc_mi": float("nan")}},  # as training writes them
    }
    if task == "classify":
        meta["thresholds"] = [0.5, 0.4, 0.3, 0.2, 0.1]
    save_checkpoint(path, model, meta)
    return path


def _beat_model() -> object:
    """A tiny real two-input beat classifier: ``forward(x (B, 1, T), features (B, K)) -> (B, 5)`` logits."""
    import torch

    class BeatNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv1d(1, 6, 9, padding=4)
            self.bn = torch.nn.BatchNorm1d(6)
            self.head = torch.nn.Linear(6 + len(BEAT_FEATURES), len(AAMI_CLASSES))

        def forward(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
            z = torch.relu(self.bn(self.conv(x))).mean(dim=2)
            return self.head(torch.cat([z, features], dim=1))

    torch.manual_seed(0)
    model = BeatNet()
    model.bn.running_mean.uniform_(-0.2, 0.2)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _beat_meta() -> dict:
    return {
        "task": "beat-classify",
        "leads": ["MLII"],
        "fs_hz": 250,
        "window_samples": BEAT_WINDOW,
        "r_offset_samples": BEAT_R_OFFSET,
        "class_names": list(AAMI_CLASSES),
        "normalisation": Normalisation(kind="zscore", eps=1e-3).to_dict(),
        "feature_names": list(BEAT_FEATURES),
        "metrics": {},
    }


@pytest.fixture(scope="module")
def beat_engine(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, object]:
    """A two-input beat-classify engine (max_batch 16) and its PyTorch model."""
    model = _beat_model()
    folder = tmp_path_factory.mktemp("beat") / "beat-cls"
    result = build_engine_from_model(model, _beat_meta(), folder, max_batch=16, data_dir=data_dir)
    assert result.onnx_max_abs_diff < 1e-5
    return folder, model


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Path]:
    """One classify and one segment engine folder, built once (max_batch 16 so that splitting is exercised)."""
    root = tmp_path_factory.mktemp("engines")
    out = {}
    for task in ("classify", "segment"):
        ckpt = _checkpoint(root / f"{task}.pt", task)
        result = build_engine(ckpt, root / task, max_batch=16, data_dir=data_dir)
        assert result.onnx_max_abs_diff < 1e-4
        assert (result.plan_skipped is None) == (TRT_REASON is None)
        out[task] = root / task
        out[f"{task}.pt"] = ckpt
    return out


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_round_trip_matches_pytorch_on_real_records(engines: dict[str, Path], data_dir: Path, task: str) -> None:
    model, meta = load_checkpoint(engines[f"{task}.pt"])
    with load_engine(engines[task], backend="onnxruntime", threads=2) as engine:
        m = engine.manifest
        assert m.task == task and m.fs_hz == 250 and m.opset == 17
        # 40 real windows (other records than the build check's 32), more than max_batch: split in 16 + 16 + 8.
        windows = reference_windows(m.leads, task == "segment", m.fs_hz, m.window_samples, 72, data_dir)[32:]
        got = engine.infer(windows)
    want = torch_logits(model, normalise(windows, Normalisation.from_dict(meta["normalisation"])))
    assert got.dtype == np.float32 and got.shape == want.shape
    assert want.shape == ((40, 5) if task == "classify" else (40, 4, SEG_WINDOW))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_manifest_records_the_checkpoint(engines: dict[str, Path]) -> None:
    cls = Manifest.load(engines["classify"])
    assert cls.leads == LEADS_12 and cls.class_names == PTBXL_SUPERCLASSES
    assert cls.thresholds == {"NORM": 0.5, "MI": 0.4, "STTC": 0.3, "CD": 0.2, "HYP": 0.1}
    assert cls.input_shape == (None, 12, CLS_WINDOW) and cls.output_names == ("logits",)
    assert cls.activation == "sigmoid" and cls.normalisation == Normalisation(kind="zscore", eps=1e-3)
    assert cls.metrics["val"] == {"macro_auroc": 0.5, "auroc_mi": None} and cls.metrics["export_check"]["windows"] == 32
    assert cls.hop_samples == CLS_WINDOW // 2 and cls.max_batch == 16 and cls.name == "classify"
    seg = Manifest.load(engines["segment"])
    assert seg.class_names == WAVE_CLASSES and seg.thresholds == {} and seg.activation == "softmax"
    assert seg.input_shape == (None, 1, SEG_WINDOW)
    assert set(seg.files) == ({ONNX_FILE} if TRT_REASON else {ONNX_FILE, PLAN_FILE})
    assert seg.precision == "fp32"


def test_manifest_round_trips_through_json(engines: dict[str, Path], tmp_path: Path) -> None:
    m = Manifest.load(engines["classify"])
    m.write(tmp_path)
    assert Manifest.from_dict(json.loads((tmp_path / MANIFEST_FILE).read_text())) == m


def _copy(engines: dict[str, Path], tmp_path: Path) -> Path:
    folder = tmp_path / "engine"
    shutil.copytree(engines["classify"], folder)
    return folder


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / MANIFEST_FILE
    raw = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del raw[key]
        else:
            raw[key] = value
    path.write_text(json.dumps(raw))


def test_missing_file_is_named(engines: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(engines, tmp_path)
    (folder / ONNX_FILE).unlink()
    with pytest.raises(ManifestError, match=r"model\.onnx: listed in manifest\.json but missing$"):
        load_engine(folder)


def test_hash_mismatch_is_named(engines: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(engines, tmp_path)
    with (folder / ONNX_FILE).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ManifestError, match=r"model\.onnx: sha256 mismatch .*changed after the build"):
        load_engine(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"schema": 2}, r"manifest\.json: unknown manifest schema version 2 \(this code reads 1\)"),
        ({"fs_hz": None}, r"manifest\.json: missing key\(s\) \['fs_hz'\]"),
        ({"window_samples": "2500"}, r"manifest\.json: key 'window_samples' must be int, got str"),
        ({"task": "detect"}, r"manifest\.json: task 'detect' is not one of"),
        ({"thresholds": {"NORM": 0.5}}, r"manifest\.json: thresholds must give exactly one value per class"),
        ({"input_shape": [None, 8, 2500]}, r"manifest\.json: input_shape \[None, 8, 2500\] does not match"),
        ({"extra": 1}, r"manifest\.json: unknown key\(s\) \['extra'\]"),
        ({"r_offset_samples": 10}, r"manifest\.json: r_offset_samples applies to beat-classify engines only"),
        ({"thresholds": {c: 2.0 for c in PTBXL_SUPERCLASSES}}, r"manifest\.json: thresholds must be probabilities"),
    ],
)
def test_bad_manifest_gives_one_clear_line(
    engines: dict[str, Path], tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    folder = _copy(engines, tmp_path)
    _edit_manifest(folder, **changes)
    with pytest.raises(ManifestError, match=message) as info:
        Manifest.load(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


def test_not_an_engine_folder(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such file"):
        load_engine(tmp_path)


def test_backend_choice(engines: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(engines, tmp_path)
    m = Manifest.load(folder)
    assert choose_backend(m, "auto") == ("onnxruntime" if TRT_REASON or not m.has_plan else "tensorrt")
    assert choose_backend(m, "onnxruntime") == "onnxruntime"
    with pytest.raises(EngineError, match="unknown backend 'cuda'"):
        choose_backend(m, "cuda")
    if m.has_plan:  # an engine without a plan cannot run on TensorRT, whatever the machine
        (folder / PLAN_FILE).unlink()
        raw = json.loads((folder / MANIFEST_FILE).read_text())
        del raw["files"][PLAN_FILE]
        (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(EngineError, match=r"backend 'tensorrt' is not available: engine .* has no model\.plan"):
        load_engine(folder, backend="tensorrt")
    assert load_engine(folder, backend="auto").backend.name == "onnxruntime"


def test_infer_checks_shapes_and_handles_empty_batches(engines: dict[str, Path]) -> None:
    with load_engine(engines["classify"], backend="onnxruntime") as engine:
        with pytest.raises(ValueError, match=r"takes \(batch, 12, 2500\) windows; got \(2, 8, 2500\)"):
            engine.infer(np.zeros((2, 8, 2500), np.float32))
        assert engine.infer(np.zeros((0, 12, 2500), np.float32)).shape == (0, 5)
        flat = engine.infer(np.zeros((1, 12, 2500), np.float32))  # flat leads: z-score stays finite
        assert np.isfinite(flat).all()


def test_lead_matching(engines: dict[str, Path]) -> None:
    cls, seg = Manifest.load(engines["classify"]), Manifest.load(engines["segment"])
    assert cls.lead_indices(list(reversed(LEADS_12))) == tuple(range(11, -1, -1))
    with pytest.raises(LeadMismatchError, match=r"missing \['III', 'aVR'"):
        cls.lead_indices(["I", "II", "V1", "V2", "V3", "V4", "V5", "V6", "aVL", "aVF"])
    assert seg.lead_indices(["MLII", "V5"]) == (0, 1)  # segmentation runs on any lead


def test_probabilities() -> None:
    logits = np.array([[0.0, 2.0, -2.0]], np.float32)
    np.testing.assert_allclose(to_probabilities(logits, "sigmoid"), [[0.5, 0.880797, 0.119203]], atol=1e-6)
    p = to_probabilities(np.stack([logits, 2 * logits], axis=2), "softmax")  # (1, 3, 2): classes on axis 1
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert p[0, :, 0].argmax() == 1


def test_fixed_normalisation() -> None:
    spec = Normalisation.from_dict({"kind": "fixed", "mean": [1.0, -1.0], "std": [2.0, 0.5]})
    x = np.array([[[1.0, 3.0], [-1.0, 0.0]]])
    np.testing.assert_allclose(normalise(x, spec), [[[0.0, 1.0], [0.0, 2.0]]])
    with pytest.raises(ValueError, match="unknown normalisation keys"):
        Normalisation.from_dict({"kind": "zscore", "scale": 2})


def test_export_check_fails_the_build(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.inference.onnx_backend import OnnxRuntimeBackend

    run = OnnxRuntimeBackend.run
    monkeypatch.setattr(OnnxRuntimeBackend, "run", lambda self, x, f=None: run(self, x, f) + np.float32(3e-4))
    ckpt = _checkpoint(tmp_path / "c.pt", "segment")
    with pytest.raises(ExportCheckError, match=r"differs from PyTorch by 3\.0\de-04 > 1e-04 on 32 real windows"):
        build_engine(ckpt, tmp_path / "bad", data_dir=data_dir)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no engine folder, no temporary folder


def test_command_warns_without_tensorrt(engines: dict[str, Path], tmp_path: Path, data_dir: Path) -> None:
    if TRT_REASON is None:
        pytest.skip("TensorRT is available here: no warning to check")
    app = typer.Typer()
    app.command("build-engine")(build_engine_command)
    app.command("unused")(lambda: None)  # two commands, so that the sub-command name is part of the call
    base = ["build-engine", str(engines["segment.pt"]), "--data-dir", str(data_dir), "--out"]
    runner = CliRunner()
    ok = runner.invoke(app, [*base, str(tmp_path / "seg"), "--max-batch", "8"])
    assert ok.exit_code == 0, ok.output
    assert "warning: no model.plan: " in ok.output and "the engine runs on ONNX Runtime" in ok.output
    assert Manifest.load(tmp_path / "seg").max_batch == 8
    strict = runner.invoke(app, [*base, str(tmp_path / "strict"), "--require-tensorrt"])
    assert strict.exit_code == 1 and "--require-tensorrt: no TensorRT plan can be built here" in strict.output
    bad = runner.invoke(app, [*base, str(tmp_path / "bad"), "--precision", "fp8"])
    assert bad.exit_code == 1 and "precision 'fp8' is not one of" in bad.output


def test_edge_never_imports_torch(engines: dict[str, Path]) -> None:
    code = (
        "import sys, numpy as np\n"
        "from edge.inference import load_engine\n"
        f"e = load_engine({str(engines['segment'])!r})\n"
        "e.infer(np.zeros((1, 1, 2000), np.float32))\n"
        "bad = sorted(m for m in ('torch', 'tensorrt', 'train') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.tensorrt
@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT unavailable: {TRT_REASON}")
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_matches_onnxruntime(tmp_path: Path, data_dir: Path, precision: str) -> None:
    # max_batch 16 < the 32 check windows: the build's plan check and the int8 calibrator (opt batch 16) run batched
    ckpt = _checkpoint(tmp_path / "c.pt", "classify")
    result = build_engine(ckpt, tmp_path / "e", precision, max_batch=16, require_tensorrt=True, data_dir=data_dir)
    assert result.manifest.precision == precision and result.manifest.tensorrt["version"]
    check = result.manifest.metrics["export_check"]
    assert check["plan_max_abs_prob_diff"] <= PLAN_MAX_PROB_DIFF.get(precision, 1e-3)
    windows = reference_windows(LEADS_12, False, 250, CLS_WINDOW, 72, data_dir)[32:]  # 40 windows the build never saw
    with load_engine(tmp_path / "e", backend="auto") as trt_engine, load_engine(tmp_path / "e", "onnxruntime") as ort:
        assert trt_engine.backend.name == "tensorrt"
        got = trt_engine.infer(windows)  # 40 > max_batch 16: split
        assert trt_engine.infer(windows[:1]).shape == (1, 5)
        want = ort.infer(windows)
    if precision == "fp32":
        np.testing.assert_allclose(got, want, atol=1e-3, rtol=0)
    else:
        dp = np.abs(to_probabilities(got, "sigmoid") - to_probabilities(want, "sigmoid")).max()
        assert dp <= PLAN_MAX_PROB_DIFF[precision], dp


def test_segment_engine_with_a_shorter_window(engines: dict[str, Path], tmp_path: Path, data_dir: Path) -> None:
    result = build_engine(engines["segment.pt"], tmp_path / "short", window_samples=500, data_dir=data_dir)
    assert result.manifest.input_shape == (None, 1, 500) and result.manifest.hop_samples == 250
    model, _ = load_checkpoint(engines["segment.pt"])
    windows = reference_windows(("II",), True, 250, 500, 8, data_dir)
    with load_engine(tmp_path / "short") as engine:
        np.testing.assert_allclose(
            engine.infer(windows), torch_logits(model, normalise(windows, Normalisation("zscore", 1e-3))), atol=1e-4
        )
    with pytest.raises(BuildError, match="applies to segment engines only"):
        build_engine(engines["classify.pt"], tmp_path / "no", window_samples=500, data_dir=data_dir)


def test_two_input_beat_engine_matches_pytorch(beat_engine: tuple[Path, object], data_dir: Path) -> None:
    import onnxruntime as ort

    folder, model = beat_engine
    m = Manifest.load(folder)
    assert (m.task, m.leads, m.class_names, m.activation) == ("beat-classify", ("MLII",), AAMI_CLASSES, "softmax")
    assert m.feature_names == BEAT_FEATURES and m.feature_input_name == "features"
    assert m.r_offset_samples == BEAT_R_OFFSET and m.thresholds == {}
    assert m.metrics["export_check"]["source"] == "MIT-BIH annotated beats, 64 samples before R"
    inputs = ort.InferenceSession(str(folder / ONNX_FILE)).get_inputs()  # dynamic batch on both inputs
    assert [(i.name, i.shape) for i in inputs] == [("ecg", ["batch", 1, BEAT_WINDOW]), ("features", ["batch", 3])]
    # 40 real beats (more than max_batch 16: split 16 + 16 + 8), features on their own scale (not normalised)
    windows = reference_beats(("MLII",), 250, BEAT_WINDOW, BEAT_R_OFFSET, 40, data_dir)
    features = np.random.default_rng(1).uniform(0.3, 1.5, (40, 3)).astype(np.float32)
    with load_engine(folder, backend="onnxruntime") as engine:
        got = engine.infer(windows, features)
        assert engine.infer(windows[:0], features[:0]).shape == (0, 5)
    want = torch_logits(model, normalise(windows, m.normalisation), features)
    assert got.shape == want.shape == (40, 5)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(got - want).max() < 1e-5 < np.abs(want).max()


def test_beat_windows_are_centred_on_annotated_r_peaks(data_dir: Path) -> None:
    windows = reference_beats(("MLII",), 250, BEAT_WINDOW, BEAT_R_OFFSET, 32, data_dir)
    assert windows.shape == (32, 1, BEAT_WINDOW)
    # the R peak (largest |deviation from the window median|) sits within 40 ms of r_offset in most beats
    peak = np.abs(windows[:, 0] - np.median(windows[:, 0], axis=1, keepdims=True)).argmax(axis=1)
    assert np.mean(np.abs(peak - BEAT_R_OFFSET) <= 10) >= 0.8, peak


def test_features_are_required_checked_and_refused(
    beat_engine: tuple[Path, object], engines: dict[str, Path]
) -> None:
    windows = np.zeros((4, 1, BEAT_WINDOW), np.float32)
    with load_engine(beat_engine[0], backend="onnxruntime") as engine:
        with pytest.raises(ValueError, match=r"needs \(batch, 3\) features \[rr_prev_s, .*second argument; got none$"):
            engine.infer(windows)
        with pytest.raises(ValueError, match=r"needs \(batch, 3\) features .* for 4 windows; got shape \(4, 2\)$"):
            engine.infer(windows, np.zeros((4, 2), np.float32))
        with pytest.raises(ValueError, match="features must be finite"):
            engine.infer(windows, np.full((4, 3), np.nan, np.float32))
    with load_engine(engines["classify"], backend="onnxruntime") as engine:
        with pytest.raises(ValueError, match=r"takes no features \(its manifest has no feature_names\)$"):
            engine.infer(np.zeros((1, 12, CLS_WINDOW), np.float32), np.zeros((1, 3), np.float32))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"r_offset_samples": None}, r"r_offset_samples is required for a beat-classify engine"),
        ({"r_offset_samples": BEAT_WINDOW}, r"r_offset_samples must be in \[0, 160\), got 160"),
        ({"r_offset_samples": "64"}, r"key 'r_offset_samples' must be int, got str"),
        ({"activation": "sigmoid"}, r"beat-classify engine's activation must be 'softmax', got 'sigmoid'"),
        ({"class_names": ["N", "S", "V", "F", "X"]}, r"beat-classify class_names must be \['N', 'S', 'V', 'F', 'Q'\]"),
        ({"thresholds": {"N": 0.5}}, r"beat-classify thresholds must be empty \(argmax\) or give exactly one value"),
        ({"feature_names": ["rr", "rr", "x"]}, r"feature_names must be distinct non-empty names"),
        ({"feature_names": [1, 2, 3]}, r"key 'feature_names' must be a list of strings"),
        ({"feature_input_name": "ecg"}, r"feature_input_name 'ecg' must be a non-empty name other than input_name"),
    ],
)
def test_bad_beat_manifest_names_the_field(
    beat_engine: tuple[Path, object], tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    folder = tmp_path / "beat"
    shutil.copytree(beat_engine[0], folder)
    _edit_manifest(folder, **changes)
    with pytest.raises(ManifestError, match=message) as info:
        Manifest.load(folder)
    assert "\n" not in str(info.value) and str(folder) in str(info.value)


def test_run_in_batches_splits_in_order() -> None:
    calls: list[tuple[int, int | None]] = []

    def run_one(x: np.ndarray, f: np.ndarray | None) -> np.ndarray:
        calls.append((len(x), None if f is None else len(f)))
        return x.sum(axis=(1, 2))[:, None] + (0 if f is None else f[:, :1])

    x = np.arange(40 * 2 * 3, dtype=np.float32).reshape(40, 2, 3)
    f = np.arange(40, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(run_in_batches(run_one, x, f, 16), x.sum(axis=(1, 2))[:, None] + f)
    assert calls == [(16, 16), (16, 16), (8, 8)]
    assert run_in_batches(run_one, x, None, 64).shape == (40, 1) and calls[-1] == (40, None)
    with pytest.raises(ValueError, match="39 feature rows for 40 windows"):
        run_in_batches(run_one, x, f[:39], 16)


def test_batched_onnxruntime_equals_one_call(engines: dict[str, Path], data_dir: Path) -> None:
    with load_engine(engines["classify"], backend="onnxruntime") as engine:
        assert engine.manifest.max_batch == 16
        windows = reference_windows(LEADS_12, False, 250, CLS_WINDOW, 40, data_dir)
        batched = engine.infer(windows)  # 16 + 16 + 8
        one_call = engine.backend.run(normalise(windows, engine.manifest.normalisation))  # all 40 at once
    assert batched.shape == one_call.shape == (40, 5)
    np.testing.assert_allclose(batched, one_call, atol=1e-6, rtol=0)


@pytest.mark.parametrize(("n_rows", "batch", "n_batches"), [(20, 64, 1), (256, 64, 4), (100, 64, 2), (5, 1, 5)])
def test_calibration_batches_are_full_and_use_every_row(n_rows: int, batch: int, n_batches: int) -> None:
    batches = calibration_indices(n_rows, batch)
    assert len(batches) == n_batches and all(b.shape == (batch,) for b in batches)
    flat = np.concatenate(batches)
    assert set(flat.tolist()) == set(range(n_rows)) and flat.max() < n_rows
    np.testing.assert_array_equal(flat[:n_rows], np.arange(n_rows))  # in order, then cycling from row 0
    np.testing.assert_array_equal(flat[n_rows:], np.arange(len(flat) - n_rows) % n_rows)


def test_reduced_precision_plan_tolerances() -> None:
    rng = np.random.default_rng(0)
    seg = rng.normal(size=(4, 4, 500)).astype(np.float32)  # 2000 samples
    flipped = seg.copy()
    top = seg.argmax(axis=1)
    for k in range(30):  # 30 samples (1.5 %) get another most probable class
        b, t = divmod(k * 61, 500)
        flipped[b, (top[b, t] + 1) % 4, t] = seg[b, :, t].max() + 1.0
    a = plan_agreement(flipped, seg, "softmax")
    assert a["argmax_agreement"] == pytest.approx(1 - 30 / 2000)
    assert plan_problem("segment", "int8", 0.0, a) is None  # floor 98 %
    assert plan_problem("segment", "fp16", 0.0, a) == "wave-class argmax agrees with ONNX Runtime on 98.50% < 99%"
    cls = rng.normal(size=(32, 5)).astype(np.float32)
    small, large = cls.copy(), cls.copy()
    small[3, 2] += 0.04  # sigmoid slope <= 1/4: |dp| <= 0.01
    large[3, 2] += 0.4
    assert plan_problem("classify", "fp16", 1.0, plan_agreement(small, cls, "sigmoid")) is None
    big = plan_agreement(large, cls, "sigmoid")["max_abs_prob_diff"]
    assert PLAN_MAX_PROB_DIFF["fp16"] < big < 0.1
    assert plan_problem("beat-classify", "fp16", 1.0, plan_agreement(large, cls, "sigmoid")).startswith(
        "max |probability - ONNX Runtime's| = "
    )
    assert plan_problem("classify", "fp32", 2e-3, {}) == "max |plan - PyTorch| = 2.00e-03 > 1e-03"


def test_build_refuses_a_folder_that_is_not_an_engine(engines: dict[str, Path], tmp_path: Path, data_dir: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an engine")
    with pytest.raises(BuildError, match=r"exists and is not an engine folder \(no manifest\.json\)"):
        build_engine(engines["segment.pt"], tmp_path, data_dir=data_dir)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_rebuild_in_place_keeps_other_files(engines: dict[str, Path], tmp_path: Path, data_dir: Path) -> None:
    folder = tmp_path / "seg"
    build_engine(engines["segment.pt"], folder, max_batch=4, data_dir=data_dir)
    (folder / "README.md").write_text("notes")
    build_engine(engines["segment.pt"], folder, max_batch=8, data_dir=data_dir)
    assert Manifest.load(folder).max_batch == 8 and (folder / "README.md").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


@pytest.mark.tensorrt
@pytest.mark.skipif(TRT_REASON is not None, reason=f"TensorRT unavailable: {TRT_REASON}")
def test_tensorrt_two_input_beat_engine(beat_engine: tuple[Path, object], data_dir: Path) -> None:
    folder, _ = beat_engine
    assert Manifest.load(folder).has_plan  # built (and checked with batches of 16) by the fixture
    windows = reference_beats(("MLII",), 250, BEAT_WINDOW, BEAT_R_OFFSET, 40, data_dir)
    features = np.random.default_rng(1).uniform(0.3, 1.5, (40, 3)).astype(np.float32)
    with load_engine(folder, backend="tensorrt") as trt_engine, load_engine(folder, "onnxruntime") as ort_engine:
        np.testing.assert_allclose(
            trt_engine.infer(windows, features), ort_engine.infer(windows, features), atol=1e-3, rtol=0
        )


def test_feature_names_on_a_one_input_model_is_one_line(tmp_path: Path, data_dir: Path) -> None:
    import torch

    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.AdaptiveAvgPool1d(1), torch.nn.Flatten(),
                                torch.nn.Linear(2, 5))
    with pytest.raises(BuildError, match=r"^the ONNX export of forward\(x, features\[3\]\) failed: .*positional") as e:
        build_engine_from_model(model, _beat_meta(), tmp_path / "e", data_dir=data_dir)
    assert "\n" not in str(e.value) and list(tmp_path.iterdir()) == []
