"""Static int8 quantisation of an engine's ``model.onnx`` for ONNX Runtime on CPU, and the LUDB windows it uses.

:func:`quantize_onnx_int8` runs ``onnxruntime.quantization.quantize_static`` in QDQ format: weights int8 per output
channel, activations uint8 per tensor with ranges from a moving average of each calibration batch's min / max
(``CalibMovingAverage``; plain min / max let a few extreme windows stretch the ranges: wave-class argmax agreement
with fp32 95.3 % instead of 97.0 % on the shipped wave-seg, in a trial on 256 + 32 LUDB leads in record order).
ONNX Runtime fuses the QDQ pairs into integer convolutions (VNNI on x86). Calibration rows come from the LUDB
**train** part and the check rows from the **val** part of the training split (:func:`ludb_part_windows`); LUDB
test records are never read. The rule a quantised graph must pass against fp32 is :func:`int8_problem`.
``train build-engine --onnx-int8`` and :func:`train.engine_build.quantize_engine` (an existing fp32 engine folder)
both use these functions through :func:`train.engine_build.quantize_onnx_file`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from train.config import DataConfig
from train.data import ludb
from train.export import first_windows

#: Calibration rows read from the LUDB train part (every lead of a record is one row for a segment engine).
INT8_CALIBRATION_WINDOWS = 256
#: Rows compared against fp32 from the LUDB val part (16 records: 192 single-lead rows, or 16 12-lead rows).
INT8_CHECK_WINDOWS = 192
#: Rows per calibration batch (ranges are averaged over batches).
INT8_CALIBRATION_BATCH = 16
#: Segment engines: smallest fraction of check samples whose most probable wave class is the fp32 one. Measured on
#: the shipped wave-seg: 97.0 %; the decision to ship is the LUDB test boundary rule in ``docs/engines.md``.
INT8_MIN_ARGMAX_AGREEMENT = 0.95
#: Classify engines: largest |probability - fp32's| of any class on the check rows (after the activation).
INT8_MAX_PROB_DIFF = 0.05


def ludb_part_windows(
    leads: tuple[str, ...],
    per_lead: bool,
    fs_hz: float,
    window_samples: int,
    part: str,
    n_windows: int,
    data_dir: Path,
) -> np.ndarray:
    """The first window of each LUDB record of one part of the training split, resampled to ``fs_hz``.

    The split is the one training uses (``train.data.ludb.split`` with :class:`train.config.DataConfig`'s seed
    and fractions), records in split order.

    Args:
        leads: the engine's leads in channel order (classify); ignored when ``per_lead``.
        per_lead: True for a segment engine: every lead of a record is one ``(1, T)`` row.
        fs_hz: the engine's sampling rate (Hz).
        window_samples: window length (samples at ``fs_hz``).
        part: ``"train"`` (calibration) or ``"val"`` (checks); ``"test"`` is refused.
        n_windows: at most this many rows (fewer when the part has fewer).
        data_dir: folder holding ``ludb/``.

    Returns:
        ``(n, C, window_samples)`` float32 in mV.

    Raises:
        ValueError: ``part`` is ``"test"`` or unknown, or a record is shorter than a window.
        FileNotFoundError: no LUDB under ``data_dir``.
    """
    if part not in ("train", "val"):
        raise ValueError(f"int8 windows come from the LUDB train or val part, not {part!r}")
    root = Path(data_dir) / "ludb"
    if not (root / "RECORDS").is_file():
        raise FileNotFoundError(f"{root / 'RECORDS'} is missing: int8 calibration needs real LUDB records (--data-dir)")
    cfg = DataConfig()
    names = ludb.split(ludb.record_names(root), cfg.split_seed, cfg.test_fraction, cfg.val_fraction)[part]
    return first_windows([root / "data" / name for name in names], leads, per_lead, fs_hz, window_samples, n_windows)


def quantize_onnx_int8(fp32_path: Path, int8_path: Path, calibration: dict[str, np.ndarray]) -> None:
    """Write a statically quantised copy of an fp32 ONNX graph (QDQ, int8 weights per channel, uint8 activations).

    Args:
        fp32_path: the fp32 ``model.onnx``.
        int8_path: where to write the quantised graph (may not be ``fp32_path``).
        calibration: normalised float32 rows for every graph input, by input name, all with the same number of rows.

    Raises:
        ValueError: no calibration rows, or inputs of different lengths.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    lengths = {len(rows) for rows in calibration.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"int8 calibration needs the same non-zero number of rows per input, got {lengths}")
    n_rows = lengths.pop()

    class Reader(CalibrationDataReader):
        """Feeds the calibration rows in batches of :data:`INT8_CALIBRATION_BATCH`."""

        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = (
                {name: rows[lo : lo + INT8_CALIBRATION_BATCH] for name, rows in calibration.items()}
                for lo in range(0, n_rows, INT8_CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    with tempfile.TemporaryDirectory(prefix="int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference + graph clean-up, as ORT recommends
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            extra_options={"CalibMovingAverage": True},
        )


def int8_problem(task: str, agreement: dict[str, float]) -> str | None:
    """Why an int8 ``model.onnx`` fails its check against fp32 (one line), or None.

    ``agreement`` is :func:`train.engine_build.plan_agreement` of the int8 against the fp32 logits on the check rows.
    Segment, argmax agreement >=
    :data:`INT8_MIN_ARGMAX_AGREEMENT`; classify, max |probability difference| <= :data:`INT8_MAX_PROB_DIFF`."""
    if task == "segment":
        if agreement["argmax_agreement"] < INT8_MIN_ARGMAX_AGREEMENT:
            return (
                f"wave-class argmax agrees with fp32 on {agreement['argmax_agreement']:.2%} "
                f"< {INT8_MIN_ARGMAX_AGREEMENT:.0%}"
            )
        return None
    if agreement["max_abs_prob_diff"] > INT8_MAX_PROB_DIFF:
        return f"max |probability - fp32's| = {agreement['max_abs_prob_diff']:.3f} > {INT8_MAX_PROB_DIFF}"
    return None
