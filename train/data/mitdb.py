"""MIT-BIH Arrhythmia heartbeats for AAMI beat classification (inter-patient protocol of de Chazal et al. 2004).

Each record's preferred lead (:func:`edge.ecg.preferred_lead`: MLII, which is the second channel of 114) is
resampled to the internal rate with the edge's own :class:`edge.dsp.resample.StreamingResampler` (what the edge
feeds its engines, unfiltered); the reference beats of the ``.atr`` file give the labels (EC57 mapping
:data:`edge.ecg.MITDB_TO_AAMI`) and, by default, the R samples. With ``r_peaks="detected"`` the R samples are the
edge's own detections (:func:`edge.detection.beats.detect_record`, the live code path), each labelled with the
reference beat matched to it (EC57 rule, :data:`offline.scoring.BEAT_MATCH_WINDOW_S`), an unmatched detection
:data:`train.beat_metrics.NO_BEAT`: the beats, RR context and windows the edge will classify. Training and
validation use DS1 only, split by record; DS2 is test data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.detection.beats import detect_record
from edge.dsp.resample import StreamingResampler
from edge.ecg import AAMI_CLASSES, INTERNAL_FS_HZ, MITDB_TO_AAMI, preferred_lead
from offline.records import read_annotations, read_record
from offline.scoring import BEAT_MATCH_WINDOW_S, BEAT_SYMBOLS, match_pairs
from train.beat_metrics import NO_BEAT
from train.data.rate import rescale_samples

#: de Chazal 2004 training half (22 records).
DS1: tuple[str, ...] = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201", "203", "205", "207",
    "208", "209", "215", "220", "223", "230",
)  # fmt: skip
#: de Chazal 2004 test half (22 records; only 100 103 105 200 210 232 are in ../shared/data/mitdb).
DS2: tuple[str, ...] = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213", "214", "219", "221",
    "222", "228", "231", "232", "233", "234",
)  # fmt: skip
#: DS1 records held out for model selection, S and V beats in both parts (val: N 8851, S 224, V 227, F 6; the 18
#: training records: N 37015, S 720, V 3561, F 409, Q 8).
VAL_RECORDS: tuple[str, ...] = ("118", "124", "215", "220")
#: Where the R peaks of :func:`read_beats` come from: the ``.atr`` reference beats or the edge's detections.
R_PEAK_SOURCES: tuple[str, ...] = ("reference", "detected")
#: DS1 records used for training.
TRAIN_RECORDS: tuple[str, ...] = tuple(r for r in DS1 if r not in VAL_RECORDS)


@dataclass(frozen=True)
class BeatRecord:
    """One record's lead and beats (reference, or detected and labelled from the reference).

    Attributes:
        name: record name (``"100"``).
        lead: the lead used (canonical name).
        signal_mv: ``(n,)`` float32 mV at the internal rate.
        r_samples: ``(k,)`` int64 R samples at the internal rate.
        r_times_s: ``(k,)`` float64 R times (s, from the annotation's or detection's sample at the record's own
            rate, as the edge's beats carry them).
        labels: ``(k,)`` int64 indices into :data:`edge.ecg.AAMI_CLASSES`; -1 for a beat symbol outside the EC57
            mapping (kept for RR context and matching, not scored); :data:`train.beat_metrics.NO_BEAT` for a
            detection that matches no reference beat.
    """

    name: str
    lead: str
    signal_mv: np.ndarray
    r_samples: np.ndarray
    r_times_s: np.ndarray
    labels: np.ndarray


def to_internal(signal_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """``(n,)`` mV at ``fs_hz`` -> float32 at the internal rate, through the edge's streaming resampler."""
    return StreamingResampler(fs_hz, INTERNAL_FS_HZ, 1).push(np.asarray(signal_mv)[:, None])[:, 0]


def check_r_peaks(value: str, name: str = "r_peaks") -> None:
    """Refuse an R-peak source outside :data:`R_PEAK_SOURCES` (``ValueError`` naming the setting ``name``)."""
    if value not in R_PEAK_SOURCES:
        raise ValueError(f"{name} is {value!r}: it must be one of {', '.join(R_PEAK_SOURCES)}")


def read_beats(path: Path, r_peaks: str = "reference") -> BeatRecord:
    """The preferred lead and the beats of the MIT-BIH record at ``path`` (no extension).

    Args:
        r_peaks: ``"reference"``: the annotated beats; ``"detected"``: the edge's detections on all the record's
            leads, each with the class of the reference beat matched to it within
            :data:`offline.scoring.BEAT_MATCH_WINDOW_S` (-1 when that beat's symbol has no EC57 class),
            :data:`train.beat_metrics.NO_BEAT` when none matches; reference beats the detector missed are absent, as
            at the edge.
    """
    check_r_peaks(r_peaks)
    rec = read_record(path)
    lead = preferred_lead(rec.leads)
    samples, symbols = read_annotations(path)
    beats = [(n, s) for n, s in zip(samples.tolist(), symbols, strict=True) if s in BEAT_SYMBOLS]
    samples = np.array([n for n, _ in beats], dtype=np.int64)
    labels = np.array([AAMI_CLASSES.index(MITDB_TO_AAMI[s]) if s in MITDB_TO_AAMI else -1 for _, s in beats], np.int64)
    if r_peaks == "detected":
        detected = np.array([b.sample for b in detect_record(rec.signal_mv, rec.fs_hz)], dtype=np.int64)
        ref_idx, det_idx = match_pairs(samples, detected, BEAT_MATCH_WINDOW_S * rec.fs_hz)
        matched = np.full(len(detected), NO_BEAT, dtype=np.int64)
        matched[det_idx] = labels[ref_idx]
        samples, labels = detected, matched
    return BeatRecord(
        name=rec.name,
        lead=rec.leads[lead],
        signal_mv=to_internal(rec.signal_mv[:, lead], rec.fs_hz),
        r_samples=rescale_samples(samples, rec.fs_hz),
        r_times_s=samples / rec.fs_hz,
        labels=labels,
    )


def beat_windows(
    signal_mv: np.ndarray, r_samples: np.ndarray, before: int, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``[r - before, r - before + window)`` around each R sample (internal rate).

    Returns:
        ``(m, window)`` float32 windows of the beats whose window lies inside the signal, and the boolean mask of
        those beats (``(k,)``).
    """
    r = np.asarray(r_samples, dtype=np.int64)
    inside = (r - before >= 0) & (r - before + window <= len(signal_mv))
    starts = r[inside] - before
    return signal_mv[starts[:, None] + np.arange(window)[None, :]].astype(np.float32), inside
