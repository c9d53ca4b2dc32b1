"""Rhythm episodes and alarms offline: reference episodes from annotations, records streamed as the edge would.

The streaming harness shared by ``bench/arrhythmia.py``, ``bench/alarms.py`` and the episode / alarm tests. Every
record runs through the live code path: beats from the edge's detector (``detect_record`` on the preferred lead, fed
in 40 ms chunks), the band-passed lead at the internal rate (the edge's streaming resampler and display band-pass)
in 1 s chunks, and each beat pushed once the detector would have emitted it (R time + its latency). Beat classes
come from the reference: a detected beat paired one-to-one with a reference beat within 150 ms
(:func:`offline.scoring.pair_beats`) takes the EC57 class of its symbol (``edge.ecg.MITDB_TO_AAMI``).

Reference episodes: MIT-BIH ``+`` annotations whose ``aux_note`` starts with ``(`` (an episode lasts until the next
one); AF = AFIB + AFL; MIT-BIH's paced code ``P`` is ``PACED``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from edge.detection.beats import Beat, detect_record
from edge.dsp.filters import StreamingSOS, display_bandpass
from edge.dsp.resample import StreamingResampler
from edge.ecg import INTERNAL_FS_HZ, MITDB_TO_AAMI, preferred_lead
from edge.interpret.af import DashAFDetector
from edge.interpret.alarms import AlarmEvent, AlarmLimits, AlarmMonitor
from edge.interpret.episodes import EpisodeConfig, EpisodeTracker
from edge.interpret.events import BeatEvent, EpisodeEvent, RhythmCall
from offline.records import read_record
from offline.scoring import BEAT_MATCH_WINDOW_S, BEAT_SYMBOLS, pair_beats

#: Signal chunk fed to the tracker (s) and detector chunk (s, as a device sends).
CHUNK_S = 1.0
DETECT_CHUNK_S = 0.04

Span = tuple[float, float]


@dataclass
class Prepared:
    """One record ready to stream: detected beats, the band-passed lead, reference classes and episodes.

    Attributes:
        name: record name; duration_s: its length (s); beats: detected beats; classes: EC57 class per detected
        beat (None: none); signal_mv: band-passed preferred lead at INTERNAL_FS_HZ (mV); episodes: reference
        episodes (s) by code; ref_v_s: reference V beat times (s).
    """

    name: str
    duration_s: float
    beats: list[Beat]
    classes: list[str | None]
    signal_mv: np.ndarray
    episodes: dict[str, list[Span]] = field(default_factory=dict)
    ref_v_s: np.ndarray = field(default_factory=lambda: np.zeros(0))


def rhythm_marks(samples: np.ndarray, symbols: list[str], aux: list[str], fs_hz: float,
                 duration_s: float) -> list[tuple[str, float, float]]:
    """The reference rhythm of a record as ``(code, start_s, end_s)`` runs, in time order: one per ``+`` annotation
    whose ``aux_note`` starts with ``(``, lasting until the next such annotation or ``duration_s`` (s). Codes are
    MIT-BIH's (``N`` included) with its paced code ``P`` as ``PACED``. The one aux-note parser of the project.

    Args:
        samples: annotation positions (samples at ``fs_hz``); symbols / aux: their symbols and aux notes;
        duration_s: record length (s): the last run ends there.
    """
    marks = [(int(s) / fs_hz, a.strip("\x00 ").lstrip("(")) for s, sym, a in zip(samples, symbols, aux, strict=True)
             if sym == "+" and a and a.startswith("(")]
    return [("PACED" if code == "P" else code, t, marks[i + 1][0] if i + 1 < len(marks) else duration_s)
            for i, (t, code) in enumerate(marks)]


def rhythm_episodes(samples: np.ndarray, symbols: list[str], aux: list[str], fs_hz: float,
                    duration_s: float) -> dict[str, list[Span]]:
    """Reference rhythm episodes (s) by code (:func:`rhythm_marks`); AFIB and AFL also go under ``AF``."""
    out: dict[str, list[Span]] = {}
    for code, t, end in rhythm_marks(samples, symbols, aux, fs_hz, duration_s):
        out.setdefault(code, []).append((t, end))
        if code in ("AFIB", "AFL"):
            out.setdefault("AF", []).append((t, end))
    return out


def reference_classes(beats: list[Beat], ref_samples: np.ndarray, ref_symbols: list[str],
                      tol_samples: float) -> list[str | None]:
    """EC57 class of the reference beat paired with each detected beat (:func:`offline.scoring.pair_beats`,
    within ``tol_samples``); ``Q`` (unclassifiable) for a detection no reference beat pairs with (noise, flutter
    waves), as a classifier would have to give it some class; None for a symbol outside the EC57 mapping."""
    pairs = pair_beats(np.asarray(ref_samples, dtype=np.int64), np.array([b.sample for b in beats], dtype=np.int64),
                       tol_samples)
    return [MITDB_TO_AAMI.get(ref_symbols[j]) if j >= 0 else "Q" for j in pairs.tolist()]


def band_passed(lead_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """The lead (mV at ``fs_hz`` Hz) resampled to the internal rate and band-passed (0.5–40 Hz) with the edge's
    streaming stages; mV at INTERNAL_FS_HZ."""
    res = StreamingResampler(fs_hz, INTERNAL_FS_HZ, 1)
    x = np.concatenate([res.push(lead_mv[:, None]), res.flush()])
    return StreamingSOS(display_bandpass(INTERNAL_FS_HZ), 1).push(x)[:, 0]


def prepare_signal(name: str, lead_mv: np.ndarray, fs_hz: float) -> Prepared:
    """A signal without annotations (one lead, mV at ``fs_hz`` Hz) ready to stream: detected beats, no classes."""
    x = np.asarray(lead_mv, dtype=np.float64)
    beats = detect_record(x, fs_hz, chunk_samples=max(1, round(DETECT_CHUNK_S * fs_hz)))
    return Prepared(name, len(x) / fs_hz, beats, [None] * len(beats), band_passed(x, fs_hz))


def prepare(path: Path, beat_classes: bool) -> Prepared:
    """Read a WFDB record, detect its beats on the preferred lead, attach reference classes (``beat_classes``)
    and episodes from its ``.atr`` annotations when there are any."""
    record = read_record(path)
    x = record.signal_mv[:, preferred_lead(record.leads)].astype(np.float64)
    prep = prepare_signal(record.name, x, record.fs_hz)
    if not path.with_suffix(".atr").exists():
        return prep
    ann = wfdb.rdann(str(path), "atr")
    symbols = list(ann.symbol)
    aux = list(ann.aux_note or [""] * len(symbols))
    prep.episodes = rhythm_episodes(ann.sample, symbols, aux, record.fs_hz, record.duration_s)
    keep = [i for i, s in enumerate(symbols) if s in BEAT_SYMBOLS]
    if beat_classes:
        prep.classes = reference_classes(prep.beats, ann.sample[keep], [symbols[i] for i in keep],
                                         BEAT_MATCH_WINDOW_S * record.fs_hz)
    prep.ref_v_s = np.array([ann.sample[i] / record.fs_hz for i in keep if MITDB_TO_AAMI.get(symbols[i]) == "V"])
    return prep


def beat_events(prep: Prepared, with_classes: bool) -> list[tuple[float, BeatEvent]]:
    """(emission time s, beat) pairs: each beat is due when the detector would have emitted it."""
    return [(b.time_s + b.latency_s,
             BeatEvent(time_s=b.time_s, rr_s=b.rr_s, cls=c if with_classes else None))
            for b, c in zip(prep.beats, prep.classes, strict=True)]


def stream(prep: Prepared, with_classes: bool, config: EpisodeConfig | None = None,
           monitor: AlarmMonitor | None = None,
           baseline: DashAFDetector | None = None) -> tuple[list[EpisodeEvent], list[AlarmEvent], list[EpisodeEvent]]:
    """Stream one record through an :class:`EpisodeTracker`, optionally an :class:`AlarmMonitor` (updated after
    every beat and chunk) and the RR-only AF baseline fed the same beats.

    Returns the tracker's episode events, the alarm events and the baseline's AFIB events.
    """
    tracker = EpisodeTracker(config)
    beats = beat_events(prep, with_classes)
    events: list[EpisodeEvent] = []
    alarms: list[AlarmEvent] = []
    base: list[EpisodeEvent] = []

    def take(out: list[EpisodeEvent | RhythmCall]) -> None:
        events.extend(e for e in out if isinstance(e, EpisodeEvent))
        if monitor is not None:
            alarms.extend(monitor.update(tracker.snapshot()))

    chunk = int(CHUNK_S * INTERNAL_FS_HZ)
    bi = 0
    for start in range(0, prep.signal_mv.size, chunk):
        t0 = start / INTERNAL_FS_HZ
        while bi < len(beats) and beats[bi][0] < t0 + CHUNK_S:
            take(tracker.push_beat(beats[bi][1]))
            if baseline is not None:
                base += baseline.push(beats[bi][1])
            bi += 1
        take(tracker.push_signal(prep.signal_mv[start : start + chunk], t0))
    take(tracker.flush())
    if baseline is not None:
        base += baseline.flush(prep.duration_s)
    return events, alarms, base


def spans(events: list[EpisodeEvent], rhythm: str) -> list[Span]:
    """Detected (start, end) spans (s) of one type from its end events (AF = AFIB)."""
    want = ("AFIB", "AFL") if rhythm == "AF" else (rhythm,)
    return [(e.start_s, e.end_s) for e in events if e.kind == "end" and e.type in want]  # type: ignore[misc]


def overlap(a: list[Span], b: list[Span]) -> float:
    """Total overlap (s) between two lists of (start, end) spans (s)."""
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in a for s2, e2 in b)


def vt_run(times_s: np.ndarray, classes: Sequence[str | None], onset_s: float, end_s: float,
           limits: AlarmLimits) -> tuple[int, float | None, float | None]:
    """The vt alarm's rule on reference beats within [onset − 0.1 s, end] (s): the longest run of consecutive V beats,
    the mean rate (bpm) of that run, and the time (s) of the beat at which a run first had ≥ ``vt_run_beats`` beats
    at a mean rate > ``vt_rate_bpm`` (None: the episode is below the alarm's definition)."""
    run: list[float] = []
    longest, rate, met = 0, None, None
    for t, c in zip(times_s, classes, strict=True):
        if not onset_s - 0.1 <= t <= end_s:
            continue
        if c != "V":
            run = []
            continue
        run.append(float(t))
        r = 60.0 * (len(run) - 1) / (run[-1] - run[0]) if len(run) > 1 and run[-1] > run[0] else None
        if len(run) > longest:
            longest, rate = len(run), r
        if met is None and len(run) >= limits.vt_run_beats and r is not None and r > limits.vt_rate_bpm:
            met = run[-1]
    return longest, rate, met
