"""Chunk sequence tracking of one device: order, duplicates, gaps, and restarts of the device's counter.

A device numbers its chunks with ``seq`` and stamps each with ``t0``, the device time of its first sample (s).
:class:`SequenceTracker` puts chunks back in order (holding at most ``reorder_window`` early ones), drops true
duplicates, declares a gap when a missing chunk does not come, and recognises a device whose counter restarted
(a reboot sends ``seq`` back near 0; a bug or an attacker sends a huge jump) by its ``t0``: a chunk whose ``seq`` is
out of line but whose ``t0`` moves the device clock forward is new data, so the tracker resumes from it instead of
dropping every later chunk as a duplicate. Pure logic: no clocks, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

#: A forward ``seq`` jump larger than this many chunks is not a gap to wait for but a renumbering.
MAX_GAP_CHUNKS = 1000


@dataclass(frozen=True)
class SeqEvent:
    """Something the tracker noticed.

    Attributes:
        kind: ``duplicate`` (dropped), ``reordered`` (an early chunk was held and put back in order),
            ``gap`` (``missing`` chunks never came; the stream continues after them) or ``renumbered`` (the device's
            counter restarted or jumped while its clock went on; nothing was lost).
        seq: the ``seq`` of the chunk concerned.
        missing: chunks lost in a gap (0 otherwise).
    """

    kind: str
    seq: int
    missing: int = 0


@dataclass
class SequenceTracker(Generic[T]):
    """Orders one device's chunks by ``seq``; ``push(seq, t0_s, end_s, item) -> (items in order, events)``.

    Args:
        reorder_window: early chunks held while waiting for a missing one before declaring a gap.
        clock_slack_s: how far (s) a chunk's ``t0`` may lie before the end of the last accepted chunk and still
            count as new data (device clock jitter); at most half the last chunk's duration, so that a repeat of
            the last chunk is always a duplicate.

    State (printable): ``next_seq`` (None before the first chunk), ``last_t0_s`` / ``last_end_s`` (device time of
    the first sample of the last accepted chunk and just after its last one), ``held`` (early chunks by seq).
    """

    reorder_window: int = 2
    clock_slack_s: float = 0.05
    next_seq: int | None = None
    last_t0_s: float | None = None
    last_end_s: float | None = None
    held: dict[int, tuple[float, float, T]] = field(default_factory=dict, repr=False)

    def push(self, seq: int, t0_s: float, end_s: float, item: T) -> tuple[list[T], list[SeqEvent]]:
        """Take one chunk (``end_s``: device time just after its last sample); return the chunks now in order."""
        events: list[SeqEvent] = []
        if self.next_seq is None:
            return self._accept(seq, t0_s, end_s, item, events), events
        if seq == self.next_seq:
            return self._accept(seq, t0_s, end_s, item, events), events
        if self._is_new_data(t0_s) and (seq < self.next_seq or seq - self.next_seq > MAX_GAP_CHUNKS):
            # the counter restarted (reboot) or jumped, but the device clock went on: resume from this chunk
            out = self._release_held(events)
            events.append(SeqEvent("renumbered", seq))
            return out + self._accept(seq, t0_s, end_s, item, events), events
        if seq < self.next_seq or seq in self.held:
            events.append(SeqEvent("duplicate", seq))
            return [], events
        self.held[seq] = (t0_s, end_s, item)
        if len(self.held) <= self.reorder_window:
            return [], events
        first = min(self.held)
        events.append(SeqEvent("gap", first, missing=first - self.next_seq))
        self.next_seq = first
        return self._drain(events), events

    def flush(self) -> tuple[list[T], list[SeqEvent]]:
        """The stream went quiet: release every held chunk in seq order (gaps between them are reported)."""
        events: list[SeqEvent] = []
        return self._release_held(events), events

    def reset(self) -> None:
        """Forget the stream: the next chunk starts it anew."""
        self.next_seq = None
        self.last_t0_s = None
        self.last_end_s = None
        self.held.clear()

    def _is_new_data(self, t0_s: float) -> bool:
        if self.last_end_s is None or self.last_t0_s is None:
            return False
        slack = min(self.clock_slack_s, 0.5 * (self.last_end_s - self.last_t0_s))
        return t0_s >= self.last_end_s - slack

    def _accept(self, seq: int, t0_s: float, end_s: float, item: T, events: list[SeqEvent]) -> list[T]:
        self.next_seq = seq + 1
        self.last_t0_s, self.last_end_s = t0_s, end_s
        return [item] + self._drain(events, reordered=True)

    def _drain(self, events: list[SeqEvent], reordered: bool = False) -> list[T]:
        """Release held chunks from ``next_seq`` on (``reordered``: a late chunk just filled the hole before them)."""
        out: list[T] = []
        while self.next_seq in self.held:
            t0_s, end_s, item = self.held.pop(self.next_seq)
            if reordered:
                events.append(SeqEvent("reordered", self.next_seq))
            self.next_seq += 1
            self.last_t0_s, self.last_end_s = t0_s, end_s
            out.append(item)
        return out

    def _release_held(self, events: list[SeqEvent]) -> list[T]:
        out: list[T] = []
        while self.held:
            first = min(self.held)
            if self.next_seq is not None and first > self.next_seq:
                events.append(SeqEvent("gap", first, missing=first - self.next_seq))
            self.next_seq = first
            out += self._drain(events)
        return out
