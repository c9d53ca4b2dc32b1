"""Inputs and outputs of the rhythm-episode layer: one beat in, episode and rhythm-call events out.

Times are on the device clock, in seconds (the clock of the samples the device sent, not the edge's wall clock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.ecg import AAMI_CLASSES

#: Rhythm codes of the episode layer: MIT-BIH's rhythm annotation codes (``aux_note`` of ``+`` annotations without
#: the leading ``(``), plus PAUSE, ASYSTOLE and NOISE, which MIT-BIH marks otherwise.
RHYTHM_CODES: tuple[str, ...] = (
    "N", "SBR", "STACH", "AFIB", "AFL", "SVTA", "VT", "VFL", "B", "T", "PAUSE", "ASYSTOLE", "PACED", "NOISE",
)
#: Beat quality values given by the wave segmenter.
BEAT_QUALITIES: tuple[str, ...] = ("good", "noisy")


@dataclass(frozen=True)
class BeatEvent:
    """One detected beat, as the episode layer sees it.

    Attributes:
        time_s: device-clock time of the R peak (s).
        rr_s: interval to the previous detected beat (s), None for the first beat of a stream.
        cls: AAMI class (:data:`edge.ecg.AAMI_CLASSES`) from the beat classifier, None when there is none.
        class_probs: class probabilities by class name, None when there is no classifier.
        p_wave: True / False when the wave segmenter found / did not find a P wave before this QRS; None when the
            beat was not segmented.
        pr_ms: PR interval (P onset to QRS onset, ms) of the segmented beat, None without a P wave or QRS onset.
        quality: ``"good"`` / ``"noisy"`` from the segmenter, None when unknown.
        paced: True when a pacing spike (:mod:`edge.detection.pacing`) came just before this beat's R peak (its
            ``cls`` is then ``"Q"``), False when the edge looked and found none, None when no spike detector ran
            (beats from annotations, tests).
    """

    time_s: float
    rr_s: float | None = None
    cls: str | None = None
    class_probs: Mapping[str, float] | None = None
    p_wave: bool | None = None
    quality: str | None = None
    pr_ms: float | None = None
    paced: bool | None = None

    def __post_init__(self) -> None:
        if self.cls is not None and self.cls not in AAMI_CLASSES:
            raise ValueError(f"beat class must be one of {AAMI_CLASSES} or None, got {self.cls!r}")
        if self.quality is not None and self.quality not in BEAT_QUALITIES:
            raise ValueError(f"beat quality must be one of {BEAT_QUALITIES} or None, got {self.quality!r}")
        if self.rr_s is not None and not self.rr_s > 0:
            raise ValueError(f"rr_s must be > 0 s or None, got {self.rr_s!r}")


@dataclass(frozen=True)
class EpisodeEvent:
    """An episode began (``kind == "start"``) or ended (``kind == "end"``).

    Attributes:
        kind: ``"start"`` or ``"end"``.
        type: rhythm code (:data:`RHYTHM_CODES`).
        start_s: device time the episode began (s); a detector that needs a window of beats dates the onset back
            to where its evidence began, so ``start_s`` can lie before ``at_s``.
        end_s: device time the episode ended (s); None for a start event.
        at_s: device time at which the detector decided (s): the latest beat or sample it had seen.
    """

    kind: str
    type: str
    start_s: float
    end_s: float | None
    at_s: float

    @property
    def duration_s(self) -> float | None:
        """``end_s - start_s`` (s) for an end event, None for a start event."""
        return None if self.end_s is None else self.end_s - self.start_s

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "type": self.type, "start_s": round(self.start_s, 3),
                               "at_s": round(self.at_s, 3)}
        if self.end_s is not None:
            out["end_s"] = round(self.end_s, 3)
            out["duration_s"] = round(self.end_s - self.start_s, 3)
        return out


@dataclass(frozen=True)
class RhythmCall:
    """The current rhythm call changed.

    Attributes:
        rhythm: rhythm code (:data:`RHYTHM_CODES`) of the highest-priority active episode, ``"N"`` when none.
        since_s: device time the episode behind the call began (s).
        at_s: device time of the change (s).
    """

    rhythm: str
    since_s: float
    at_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"rhythm": self.rhythm, "since_s": round(self.since_s, 3), "at_s": round(self.at_s, 3)}


class EpisodeState:
    """On/off state of one episode type, turning transitions into :class:`EpisodeEvent` objects.

    Every per-condition detector holds one (or more); ``start_s`` is the onset of the active episode, None when off.
    """

    def __init__(self, rhythm: str):
        if rhythm not in RHYTHM_CODES:
            raise ValueError(f"unknown rhythm code {rhythm!r}")
        self.rhythm = rhythm
        self.start_s: float | None = None

    @property
    def active(self) -> bool:
        return self.start_s is not None

    def start(self, start_s: float, at_s: float) -> list[EpisodeEvent]:
        """Begin an episode at ``start_s`` (no event if one is already active)."""
        if self.start_s is not None:
            return []
        self.start_s = float(start_s)
        return [EpisodeEvent("start", self.rhythm, self.start_s, None, float(at_s))]

    def end(self, end_s: float, at_s: float) -> list[EpisodeEvent]:
        """End the active episode at ``end_s`` (never before its start; no event if none is active)."""
        if self.start_s is None:
            return []
        start, self.start_s = self.start_s, None
        return [EpisodeEvent("end", self.rhythm, start, max(start, float(end_s)), float(at_s))]

    def reset(self) -> None:
        self.start_s = None

    def __repr__(self) -> str:
        return f"EpisodeState({self.rhythm}, start_s={self.start_s})"
