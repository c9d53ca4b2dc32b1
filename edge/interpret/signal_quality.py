"""Is the monitored lead readable? Lead-off (flat or saturated) and noise from the band-passed signal.

These are technical conditions: a flat line from a detached electrode is ``lead_off``, never asystole, and a signal
buried in artefact is ``noise`` (unreadable), never a rhythm. The rules work on 1 s blocks of the band-passed
signal (0.5–40 Hz, mV) at the internal rate:

* ``lead_off`` — the block is flat (sd < :data:`FLAT_SD_MV`, 5 µV: an open input after the band-pass) or saturated
  (≥ :data:`SATURATED_FRACTION` of its samples sit at its maximum or minimum, as a clipped amplifier leaves them);
* ``noise`` — the block holds a sample beyond ± :data:`NOISE_ABS_MV` or more than :data:`NOISE_TURNS_PER_S`
  significant turns (reversals of excursions larger than :data:`TURN_MV`): ECG gives about 5–8 per beat, so
  ≤ 30 /s at 240 bpm, and VF ≈ 2 per cycle (≤ 15 /s), while muscle and motion artefact give many more;
* ``ok`` otherwise.

The status changes after ``hold_blocks`` consecutive blocks agree (1 for lead-off, which is unambiguous).
"""

from __future__ import annotations

import numpy as np

from edge.ecg import INTERNAL_FS_HZ

FLAT_SD_MV = 0.005
SATURATED_FRACTION = 0.2
NOISE_ABS_MV = 8.0
TURN_MV = 0.1
NOISE_TURNS_PER_S = 45.0
STATUSES = ("ok", "lead_off", "noise")


def significant_turns(x_mv: np.ndarray, min_excursion_mv: float = TURN_MV) -> int:
    """Number of direction reversals of ``x_mv`` between excursions of at least ``min_excursion_mv`` (mV)."""
    x = np.asarray(x_mv, dtype=float)
    d = np.diff(x)
    ext = np.flatnonzero(d[:-1] * d[1:] < 0) + 1  # local extrema
    if ext.size == 0:
        return 0
    values = np.concatenate([[x[0]], x[ext], [x[-1]]])
    turns = 0
    anchor = values[0]
    direction = 0
    for v in values[1:]:
        step = v - anchor
        if direction >= 0 and step <= -min_excursion_mv:
            turns += direction > 0
            direction, anchor = -1, v
        elif direction <= 0 and step >= min_excursion_mv:
            turns += direction < 0
            direction, anchor = 1, v
        elif (direction > 0 and v > anchor) or (direction < 0 and v < anchor):
            anchor = v
    return turns


def block_status(x_mv: np.ndarray, fs_hz: float) -> str:
    """``ok``, ``lead_off`` or ``noise`` for one block of band-passed samples (mV) at ``fs_hz`` (rules above)."""
    x = np.asarray(x_mv, dtype=float)
    if x.size < 2 or x.std() < FLAT_SD_MV:
        return "lead_off"
    hi, lo = x.max(), x.min()
    at_rail = np.count_nonzero((x >= hi - 1e-6) | (x <= lo + 1e-6))
    if at_rail >= SATURATED_FRACTION * x.size:
        return "lead_off"
    if np.abs(x).max() > NOISE_ABS_MV or significant_turns(x) > NOISE_TURNS_PER_S * x.size / fs_hz:
        return "noise"
    return "ok"


class SignalQuality:
    """Streaming lead status from band-passed chunks ``(n,)`` mV at ``fs_hz``.

    Attributes:
        status: current status (:data:`STATUSES`); ``since_s``: device time it began (s);
        last_block: status of the last block (printable evidence).
    """

    def __init__(self, fs_hz: float = INTERNAL_FS_HZ, block_s: float = 1.0, hold_blocks: int = 2):
        self.fs_hz = float(fs_hz)
        self.block = int(round(block_s * fs_hz))
        self.hold_blocks = int(hold_blocks)
        self.reset()

    def reset(self) -> None:
        self.status = "ok"
        self.since_s = 0.0
        self.last_block = "ok"
        self._buf = np.zeros(0)
        self._t0 = 0.0
        self._candidate = "ok"
        self._count = 0
        self._candidate_s = 0.0

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    def push(self, chunk_mv: np.ndarray, t0_s: float) -> list[tuple[str, float, float]]:
        """Feed samples whose first is at device time ``t0_s`` (s); returns ``(status, since_s, at_s)`` changes
        (``at_s``: the end of the block that decided it, s: when the change became known on the device clock)."""
        chunk = np.asarray(chunk_mv, dtype=float).ravel()
        if not self._buf.size:
            self._t0 = t0_s
        self._buf = np.concatenate([self._buf, chunk])
        changes = []
        while self._buf.size >= self.block:
            status = block_status(self._buf[: self.block], self.fs_hz)
            self.last_block = status
            if status != self._candidate:
                self._candidate, self._count, self._candidate_s = status, 0, self._t0
            self._count += 1
            need = 1 if status == "lead_off" else self.hold_blocks
            if status != self.status and self._count >= need:
                self.status, self.since_s = status, self._candidate_s
                changes.append((status, self.since_s, self._t0 + self.block / self.fs_hz))
            self._buf = self._buf[self.block :]
            self._t0 += self.block / self.fs_hz
        return changes

    def __repr__(self) -> str:
        return f"SignalQuality(status={self.status}, since_s={self.since_s:.2f}, last_block={self.last_block})"
