"""Reference annotations of a replayed record, published on ``sim/<device>/truth`` so live output can be scored.

Whatever a record has is used:

* beats from ``.atr`` (MIT-BIH, QTDB): sample and symbol of every beat annotation (``BEAT_SYMBOLS``);
* wave boundaries from QTDB's ``.q1c`` (cardiologist 1; not lead-specific) or LUDB's per-lead files
  (``.i``, ``.ii`` … ``.v6``): ``(`` onset, ``p`` / ``N`` / ``t`` peak, ``)`` offset → P / QRS / T
  (parsed by :func:`offline.annotations.wave_marks`);
* rhythm episodes from the ``aux_note`` of ``.atr`` rhythm annotations (symbol ``+``, note ``(VT``, ``(AFIB``, ``(B``
  …; an episode lasts until the next one or the record's end; ``(N`` is no episode), and the alarms they imply
  (:data:`EPISODE_ALARMS`: VT → ``vt`` when its V run meets the vt alarm's own definition, ≥ ``vt_run_beats`` V
  beats in a row at > ``vt_rate_bpm`` (:func:`offline.rhythm.vt_run`, default :class:`AlarmLimits`), dated to the
  beat where it did; VFL → ``vf``, AFIB / AFL → ``af``; priorities from
  :data:`edge.interpret.alarms.ALARM_PRIORITY`);
* PTB-XL diagnostic superclasses (from :class:`simulator.sources.ReplaySource`).

:class:`Truth` holds times relative to the record start; :meth:`Truth.message` puts them on a device's clock.
The message schema is documented in docs/simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import wfdb

from edge.ecg import MITDB_TO_AAMI, canonical_lead
from edge.interpret.alarms import ALARM_PRIORITY, AlarmLimits
from edge.protocol import PROTOCOL_VERSION
from offline.annotations import LUDB_EXTENSIONS, WaveMark, wave_marks
from offline.records import Record, RecordError, read_annotations
from offline.rhythm import rhythm_marks, vt_run
from offline.scoring import BEAT_SYMBOLS
from simulator.sources import ReplaySource

#: Decimal places of times (s) in truth messages (1 µs).
TIME_DECIMALS = 6
#: The alarm each reference rhythm episode implies (MIT-BIH rhythm codes; the others imply none).
EPISODE_ALARMS: dict[str, str] = {"VT": "vt", "VFL": "vf", "AFIB": "af", "AFL": "af"}


@dataclass(frozen=True)
class Episode:
    """One reference rhythm episode: ``type`` (edge rhythm-call spelling: ``VT``, ``AFIB``, ``B``, ``PACED`` …) from
    ``start_s`` to ``end_s`` (s from the record start)."""

    type: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Wave:
    """One annotated P wave, QRS complex or T wave; times in s from the record start (None: boundary not marked).

    ``lead`` is the canonical lead it was marked on, or None when the annotator is not lead-specific (QTDB).
    """

    wave: str
    lead: str | None
    peak_s: float
    on_s: float | None
    off_s: float | None


@dataclass(frozen=True)
class Truth:
    """Everything known about one record.

    Attributes:
        record: record name.
        dataset: ``"ptbxl"`` or ``"wfdb"``.
        fs_hz: sampling rate of the record (Hz).
        n_samples: record length (samples).
        leads: canonical names of the leads being replayed.
        beat_samples: beat annotation positions (int64, samples of the record's own sampling).
        beat_symbols: their annotation symbols (``N``, ``V``, ``A`` …).
        beats_from: annotator extension of the beats (``"atr"``), or None when the record has none.
        waves: annotated waves, in file order (per lead for LUDB).
        waves_from: ``"q1c"`` or ``"ludb"``, or None.
        labels: PTB-XL diagnostic superclasses, else empty.
        info: extra metadata (PTB-XL ``ecg_id``, ``strat_fold``, ``scp_codes``).
        episodes: reference rhythm episodes from the ``.atr`` rhythm annotations, in time order.
    """

    record: str
    dataset: str
    fs_hz: float
    n_samples: int
    leads: tuple[str, ...]
    beat_samples: np.ndarray = field(repr=False)
    beat_symbols: tuple[str, ...] = field(repr=False)
    beats_from: str | None
    waves: tuple[Wave, ...] = field(repr=False)
    waves_from: str | None
    labels: tuple[str, ...]
    info: dict[str, object] = field(default_factory=dict)
    episodes: tuple[Episode, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs_hz

    def message(self, device_id: str, t0_s: float, loop: int = 0,
                span: tuple[int, int] | None = None) -> dict[str, object]:
        """The JSON-ready ``sim/<device>/truth`` message for one pass of the record whose sample 0 is at device time
        ``t0_s`` (s).

        Times (``beats.time``, wave ``on``/``peak``/``off``, episode ``start``/``end``, alarm ``time``) are on the
        device clock: ``t0_s + sample / fs``; ``beats.sample`` stays in the record's own sampling, counted from the
        record start. ``span`` = ``(first, end)`` samples of the record this pass plays (a looped record plays
        only the part between its seams, see :mod:`simulator.replay`); beats, waves and episodes outside it are
        left out, episodes are clipped to it. None: the whole record.
        """
        first, end = span if span is not None else (0, self.n_samples)
        lo_s, hi_s = first / self.fs_hz, end / self.fs_hz

        def at(t: float | None) -> float | None:
            return None if t is None else round(t0_s + t, TIME_DECIMALS)

        keep = (self.beat_samples >= first) & (self.beat_samples < end)
        samples = self.beat_samples[keep]
        times = np.round(t0_s + samples / self.fs_hz, TIME_DECIMALS)
        episodes = [(e.type, max(e.start_s, lo_s), min(e.end_s, hi_s)) for e in self.episodes
                    if e.end_s > lo_s and e.start_s < hi_s]
        return {
            "v": PROTOCOL_VERSION,
            "device": device_id,
            "record": self.record,
            "dataset": self.dataset,
            "fs": self.fs_hz,
            "leads": list(self.leads),
            "t0": round(t0_s, TIME_DECIMALS),
            "loop": loop,
            "n_samples": self.n_samples,
            "duration_s": round(self.duration_s, TIME_DECIMALS),
            "span": {"first": first, "end": end, "start": at(lo_s), "stop": at(hi_s)},
            "beats_from": self.beats_from,
            "beats": {
                "time": times.tolist(),
                "sample": samples.tolist(),
                "symbol": [sym for sym, k in zip(self.beat_symbols, keep, strict=True) if k],
            },
            "waves_from": self.waves_from,
            "waves": [
                {"wave": w.wave, "lead": w.lead, "on": at(w.on_s), "peak": at(w.peak_s), "off": at(w.off_s)}
                for w in self.waves if lo_s <= w.peak_s < hi_s
            ],
            "episodes": [{"type": name, "start": at(a), "end": at(b)} for name, a, b in episodes],
            "alarms": self._alarms(episodes, at),
            "labels": list(self.labels),
            "info": self.info,
        }

    def _alarms(self, episodes: list[tuple[str, float, float]], at: Any) -> list[dict[str, object]]:
        """The reference alarms the episodes of one pass imply (module doc), times through ``at``."""
        times = self.beat_samples / self.fs_hz
        classes = [MITDB_TO_AAMI.get(sym) for sym in self.beat_symbols]
        out = []
        for name, a, b in episodes:
            if name not in EPISODE_ALARMS:
                continue
            if name == "VT":
                a = vt_run(times, classes, a, b, AlarmLimits())[2]
                if a is None:
                    continue  # below the alarm's definition
            out.append({"type": EPISODE_ALARMS[name], "priority": ALARM_PRIORITY[EPISODE_ALARMS[name]], "time": at(a)})
        return out

    def reference_beats(self) -> np.ndarray:
        """R positions (int64 samples, sorted) from the annotations: the ``.atr`` beats, else the QRS peaks of the
        first lead with wave marks (LUDB) or of the lead-free marks (QTDB); empty when the record has neither."""
        if self.beat_samples.size:
            return np.sort(self.beat_samples)
        qrs = [w for w in self.waves if w.wave == "QRS"]
        if not qrs:
            return np.zeros(0, dtype=np.int64)
        lead = qrs[0].lead
        return np.sort(np.array([round(w.peak_s * self.fs_hz) for w in qrs if w.lead == lead], dtype=np.int64))


def rhythm_episodes(samples: np.ndarray, symbols: list[str], aux: list[str], fs_hz: float,
                    duration_s: float) -> list[Episode]:
    """Reference rhythm episodes of the record's ``+`` annotations (:func:`offline.rhythm.rhythm_marks`); normal sinus
    rhythm (``N``) is not an episode.

    Args:
        samples: annotation positions (samples); symbols, aux: their symbols and aux notes; fs_hz: sampling rate
            (Hz); duration_s: record length (s).
    """
    return [Episode(code, start, end) for code, start, end in rhythm_marks(samples, symbols, aux, fs_hz, duration_s)
            if code != "N" and end > start]


def waves_from_marks(marks: list[WaveMark], fs_hz: float, lead: str | None) -> list[Wave]:
    """:class:`Wave` objects (times in s) of parsed wave marks (:func:`offline.annotations.wave_marks`).

    Args:
        marks: the marks (samples); fs_hz: their sampling rate (Hz); lead: canonical lead they belong to, or None.
    """
    def s(sample: int | None) -> float | None:
        return None if sample is None else sample / fs_hz

    return [Wave(m.wave, lead, m.peak / fs_hz, s(m.on), s(m.off)) for m in marks]


def load_truth(source: ReplaySource, record: Record) -> Truth:
    """Collect the reference annotations stored beside ``source`` for the loaded ``record``.

    LUDB waves are kept for the leads in ``record.leads`` only (those being replayed).

    Raises:
        offline.records.RecordError: an annotation file exists but cannot be read.
    """
    beat_samples = np.zeros(0, dtype=np.int64)
    beat_symbols: tuple[str, ...] = ()
    beats_from = None
    episodes: list[Episode] = []
    if _has(source.path, "atr"):
        samples, symbols = read_annotations(source.path, "atr")
        keep = [i for i, s in enumerate(symbols) if s in BEAT_SYMBOLS]
        beat_samples = samples[keep]
        beat_symbols = tuple(symbols[i] for i in keep)
        beats_from = "atr"
        episodes = _atr_episodes(source.path, record)
    waves: list[Wave] = []
    waves_from = None
    if _has(source.path, "q1c"):
        waves = waves_from_marks(wave_marks(*read_annotations(source.path, "q1c")), record.fs_hz, None)
        waves_from = "q1c"
    else:
        for ext in LUDB_EXTENSIONS:
            lead = canonical_lead(ext)
            if lead in record.leads and _has(source.path, ext):
                waves += waves_from_marks(wave_marks(*read_annotations(source.path, ext)), record.fs_hz, lead)
                waves_from = "ludb"
    return Truth(
        record=record.name,
        dataset=source.dataset,
        fs_hz=record.fs_hz,
        n_samples=record.n_samples,
        leads=record.leads,
        beat_samples=beat_samples,
        beat_symbols=beat_symbols,
        beats_from=beats_from,
        waves=tuple(waves),
        waves_from=waves_from,
        labels=source.labels,
        info=dict(source.info),
        episodes=tuple(episodes),
    )


def _atr_episodes(path: Path, record: Record) -> list[Episode]:
    try:
        ann = wfdb.rdann(str(path), "atr")
    except (OSError, ValueError, IndexError, KeyError, TypeError, EOFError) as exc:
        raise RecordError(f"cannot read annotations {path}.atr: {exc}") from exc
    symbols = list(ann.symbol)
    aux = list(ann.aux_note or [""] * len(symbols))
    return rhythm_episodes(np.asarray(ann.sample), symbols, aux, record.fs_hz, record.duration_s)


def _has(path: Path, extension: str) -> bool:
    return path.with_name(f"{path.name}.{extension}").is_file()
