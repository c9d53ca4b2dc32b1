"""Pacemaker stimulus artefacts (pacing spikes) on the raw input, before resampling.

A pacing spike is the pacemaker's own stimulus seen through the recorder: a pulse as narrow as the recording's band
lets anything be (about 3 samples at half height on MIT-BIH 104, 360 Hz and 0.1–100 Hz; 1–2 samples, 2–4 ms, on
the 500 Hz CinC / PTB-XL paced records), shown at the same instant in every lead, just before (or on) the wide
paced QRS. The live path resamples to 250 Hz before QRS detection, which would smear it, so it is looked for here
on the device-rate samples.

Per lead, a sample ``n`` is a *narrow pulse* when, with ``y`` the signal turned so the pulse points up:

* it is a local peak of ``y`` that stands above both ``y[n - k]`` and ``y[n + k]`` (``k`` = :data:`HALF_WIDTH_S`);
* its height ``H`` above the higher of the two side minima within ``±K`` (``K`` = :data:`CONTEXT_S`) is at least
  :data:`MIN_HEIGHT_MV` and :data:`NOISE_RATIO` times the lead's noise level (the largest of the last
  :data:`NOISE_BLOCKS` block medians of ``|x[m] - x[m - k]|``, blocks of :data:`NOISE_BLOCK_S`: muscle noise and
  motion artefact raise it);
* its width at half that height is at most :data:`MAX_WIDTH_S` (QRS waves, even the sharpest R waves and Q notches
  of MIT-BIH, are wider).

A *spike* is a sample where at least :func:`leads_needed` leads (2 of a Holter's 2 or 3, a third of 12) have a
narrow pulse within :data:`COINCIDENCE_S` of it (a stimulus reaches every lead at once; a narrow QRS notch or an
electrode artefact seldom shows in several), at least :data:`REFRACTORY_S` after the previous spike. Thresholds
were chosen on MIT-BIH 104 against the 28 other MIT-BIH records, 60 LUDB and the 16 QTDB records (docs/method.md,
"Pacing").

:func:`detect_spikes` takes a whole record; :class:`SpikeStream` the same chunk by chunk (the same spikes whatever
the chunking). Sample indices are at the input rate, counted from the first sample pushed.
"""

from __future__ import annotations

import math
from collections import deque

import numba
import numpy as np

#: ``k``: a pulse must stand above the signal this far (s) on both sides of its peak (8 ms; at least 1 sample).
HALF_WIDTH_S = 0.008
#: ``K``: the pulse's base is the higher of the two side minima within this far (s) of its peak.
CONTEXT_S = 0.030
#: Largest width at half height of a pacing spike (s). 104's spikes: 7.8–9.4 ms (5th–95th percentile, both leads).
MAX_WIDTH_S = 0.010
#: Smallest spike height above its base (mV).
MIN_HEIGHT_MV = 0.15
#: A spike's height must be at least this many times the lead's noise level.
NOISE_RATIO = 8.0
#: Noise level: block length (s) and number of preceding blocks whose largest median is the level.
NOISE_BLOCK_S = 0.25
NOISE_BLOCKS = 4
#: Narrow pulses of different leads within this (s) of each other are one spike (peaks of a smeared spike differ by
#: a sample or two between leads).
COINCIDENCE_S = 0.006
#: Shortest interval between two spikes (s): one stimulus, not its ringing, is one spike; an AV-sequential pacer's
#: atrial and ventricular stimuli (100–250 ms apart) are two.
REFRACTORY_S = 0.1


def leads_needed(n_leads: int) -> int:
    """How many leads must show a narrow pulse at once for a spike: a third of them, at least 2 (all of a 1-lead
    stream)."""
    return min(n_leads, max(2, math.ceil(n_leads / 3)))


def _scales(fs_hz: float) -> tuple[int, int]:
    k = max(1, round(HALF_WIDTH_S * fs_hz))
    return k, max(k + 1, round(CONTEXT_S * fs_hz))


@numba.njit(cache=True)
def _narrow_pulses(x: np.ndarray, k: int, big_k: int, level: np.ndarray, min_height: float, ratio: float,
                   max_width: float) -> tuple[np.ndarray, np.ndarray]:
    """The narrow pulses of every lead of ``x`` (``(m, L)``), the test of :func:`narrow_pulses`; returns (lead,
    sample index into ``x``) pairs, ordered by lead and then sample. ``max_width`` is in samples."""
    m, n_leads = x.shape
    leads = np.empty(m * n_leads, np.int64)
    samples = np.empty(m * n_leads, np.int64)
    found = 0
    w = np.empty(2 * big_k + 1)
    for lead in range(n_leads):
        for j in range(big_k, m - big_k):
            c = x[j, lead]
            a = c - x[j - k, lead]
            b = c - x[j + k, lead]
            if a > 0 and b > 0:
                sign = 1.0
            elif a < 0 and b < 0:
                sign = -1.0
            else:
                continue
            if not (sign * (c - x[j - 1, lead]) >= 0 and sign * (c - x[j + 1, lead]) > 0):
                continue
            for t in range(2 * big_k + 1):  # y around the peak; w[big_k] is the peak
                w[t] = x[j - big_k + t, lead] * sign
            left_min, right_min = w[0], w[big_k + 1]
            for t in range(1, big_k):
                left_min = min(left_min, w[t])
            for t in range(big_k + 2, 2 * big_k + 1):
                right_min = min(right_min, w[t])
            base = max(left_min, right_min)
            height = w[big_k] - base
            half = base + height / 2
            if w[0] > half or w[2 * big_k] > half:  # the pulse does not end inside the context
                continue
            if not height >= max(min_height, ratio * level[j, lead]):
                continue
            left_in = big_k  # the run of samples above half height that holds the peak: its first and last
            while w[left_in - 1] > half:
                left_in -= 1
            right_in = big_k
            while w[right_in + 1] > half:
                right_in += 1
            lo, hi = left_in - 1, right_in + 1  # linear interpolation at the run's ends
            left = lo + (half - w[lo]) / (w[left_in] - w[lo])
            right = right_in + (w[right_in] - half) / (w[right_in] - w[hi])
            if right - left <= max_width:
                leads[found], samples[found] = lead, j
                found += 1
    return leads[:found], samples[:found]


@numba.njit(cache=True)
def _column_medians(block: np.ndarray) -> np.ndarray:
    """``np.median(block, axis=0)`` of an ``(m, L)`` block, the same values (the mean of the two middle values for
    an even ``m``; NaN for a column holding one)."""
    m, n_leads = block.shape
    out = np.empty(n_leads)
    col = np.empty(m)
    for lead in range(n_leads):
        has_nan = False
        for i in range(m):
            col[i] = block[i, lead]
            has_nan |= np.isnan(col[i])
        out[lead] = np.nan if has_nan else np.median(col)
    return out


@numba.njit(cache=True)
def _coincident(pulses: np.ndarray, cuts: np.ndarray, decided: int, until: int, last: int, refractory: int,
                tol: int, need: int) -> tuple[np.ndarray, int]:
    """The spikes among the narrow pulses in ``[decided, until)``: lead ``i``'s pulses are the ascending
    ``pulses[cuts[i]:cuts[i + 1]]``; a pulse at least ``refractory`` samples after the last spike (``last``) is a spike
    when at least ``need`` leads have a pulse within ``tol`` samples of it. Returns the spikes (ascending) and the
    new last spike."""
    candidates = np.unique(pulses)
    spikes = np.empty(len(candidates), np.int64)
    found = 0
    for j in candidates:
        if j < decided or j >= until or j - last < refractory:
            continue
        near = 0
        for lead in range(len(cuts) - 1):
            lead_pulses = pulses[cuts[lead]:cuts[lead + 1]]
            i = np.searchsorted(lead_pulses, j - tol)  # the lead's first pulse at or after j - tol
            if i < len(lead_pulses) and lead_pulses[i] <= j + tol:
                near += 1
        if near >= need:
            spikes[found] = j
            found += 1
            last = j
    return spikes[:found], last


def narrow_pulses(x: np.ndarray, fs_hz: float, level_mv: np.ndarray) -> list[np.ndarray]:
    """Narrow pulses of every lead, in one compiled call.

    Args:
        x: ``(m, L)`` samples in mV at ``fs_hz`` (Hz); only ``x[K:m - K]`` are judged (``K`` samples of
            :data:`CONTEXT_S` either side are context).
        level_mv: ``(m, L)`` each lead's noise level at each sample (mV; ``inf`` where unknown).

    Returns:
        Per lead, the indices into ``x`` (sorted, int64) of its samples that are narrow pulses (module docstring).
    """
    k, big_k = _scales(fs_hz)
    x = np.ascontiguousarray(x, dtype=np.float64)
    n_leads = x.shape[1]
    if len(x) < 2 * big_k + 1:
        return [np.zeros(0, np.int64) for _ in range(n_leads)]
    leads, samples = _narrow_pulses(x, k, big_k, np.ascontiguousarray(level_mv, dtype=np.float64), MIN_HEIGHT_MV,
                                    NOISE_RATIO, MAX_WIDTH_S * fs_hz)
    cuts = np.searchsorted(leads, np.arange(n_leads + 1))
    return [samples[cuts[i]:cuts[i + 1]] for i in range(n_leads)]


def detect_spikes(signal_mv: np.ndarray, fs_hz: float) -> np.ndarray:
    """The pacing spikes of a whole record: sample indices (at ``fs_hz``, Hz) of ``signal_mv``, ``(n, L)`` or
    ``(n,)`` mV; the same as :class:`SpikeStream` fed in any chunks and flushed."""
    x = np.asarray(signal_mv, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    stream = SpikeStream(fs_hz, x.shape[1])
    return np.concatenate([stream.push(x), stream.flush()])


class SpikeStream:
    """Pacing spikes of a stream, chunk by chunk: ``push(chunk) -> spike sample indices``, ``flush()``, ``reset()``.

    A sample is judged once :data:`CONTEXT_S` plus :data:`COINCIDENCE_S` of signal after it have arrived (~36 ms),
    so a spike is reported with the chunk that brings them; the spikes are the same whatever the chunking.

    Args:
        fs_hz: input rate (Hz).
        n_leads: columns of every chunk.

    State: the last few context samples (``_tail``), the noise blocks (``_medians``: the medians of the last
    :data:`NOISE_BLOCKS` complete blocks, ``_block``: the running block's ``|x[m] - x[m - k]|``), narrow pulses not
    yet decided per lead (``_pending``), the next sample to judge (``_judged``) and to decide (``_decided``), and the
    last spike (``_last``).
    """

    def __init__(self, fs_hz: float, n_leads: int):
        self.fs_hz = float(fs_hz)
        self.n_leads = int(n_leads)
        self.k, self.big_k = _scales(self.fs_hz)
        self.block = max(1, round(NOISE_BLOCK_S * self.fs_hz))
        self.tol = max(1, round(COINCIDENCE_S * self.fs_hz))
        self.refractory = max(1, round(REFRACTORY_S * self.fs_hz))
        self.need = leads_needed(self.n_leads)
        self.reset()

    def reset(self) -> None:
        """Start a new stream."""
        self.samples_in = 0
        self._tail = np.zeros((0, self.n_leads))  # the samples from _tail_start on
        self._tail_start = 0
        self._medians: deque[np.ndarray] = deque(maxlen=NOISE_BLOCKS)
        self._block = np.empty((self.block, self.n_leads))  # the running block's |x[m] - x[m - k]|, its first rows
        self._block_len = 0
        self._level_starts: deque[tuple[int, np.ndarray]] = deque()  # (first sample, level) of recent blocks
        self._pending: list[np.ndarray] = [np.zeros(0, np.int64) for _ in range(self.n_leads)]
        self._judged = self.big_k  # samples before this one have been judged
        self._decided = 0  # narrow pulses before this sample have been decided
        self._last = -self.refractory

    def __repr__(self) -> str:
        return (f"SpikeStream(fs_hz={self.fs_hz:g}, n_leads={self.n_leads}, samples_in={self.samples_in}, "
                f"last_spike={self._last if self._last >= 0 else None})")

    def push(self, chunk_mv: np.ndarray) -> np.ndarray:
        """Feed ``(n, n_leads)`` mV at ``fs_hz``; returns the sample indices (int64, ascending) of the spikes decided
        with this chunk."""
        chunk = np.asarray(chunk_mv, dtype=np.float64).reshape(-1, self.n_leads)
        if not len(chunk):
            return np.zeros(0, np.int64)
        x = np.concatenate([self._tail, chunk])
        self._noise(x, len(chunk))
        self.samples_in += len(chunk)
        stop = self.samples_in - self.big_k  # samples before this have their full context
        if stop > self._judged:
            lo = self._judged - self.big_k - self._tail_start  # window start in x
            window = x[lo:stop + self.big_k - self._tail_start]
            level = self._levels(self._judged - self.big_k, len(window))
            offset = self._judged - self.big_k
            for i, found in enumerate(narrow_pulses(window, self.fs_hz, level)):
                if len(found):
                    self._pending[i] = np.concatenate([self._pending[i], found + offset])
            self._judged = stop
        keep = max(0, len(x) - 2 * self.big_k - self.k)
        self._tail, self._tail_start = x[keep:], self._tail_start + keep
        return self._decide(self._judged - self.tol)

    def flush(self) -> np.ndarray:
        """End of stream: decide the narrow pulses still waiting for other leads (the last :data:`CONTEXT_S` of the
        stream is never judged). Call :meth:`reset` before pushing a new stream."""
        return self._decide(self._judged)

    def _noise(self, x: np.ndarray, n_new: int) -> None:
        """Update the noise blocks with the ``n_new`` last samples of ``x`` (its first rows are the kept tail)."""
        start = len(x) - n_new
        d = np.abs(x[start:] - x[start - self.k:len(x) - self.k]) if start >= self.k else np.abs(
            x[start:] - np.concatenate([np.repeat(x[:1], self.k, axis=0), x])[start:len(x)])
        pos = 0
        while pos < len(d):
            take = min(len(d) - pos, self.block - self._block_len)
            self._block[self._block_len:self._block_len + take] = d[pos:pos + take]
            self._block_len += take
            pos += take
            if self._block_len == self.block:
                block_start = self.samples_in + pos - self.block  # first sample of the block just completed
                self._medians.append(_column_medians(self._block))
                self._block_len = 0
                # the level from the next block on: the largest median of the last NOISE_BLOCKS blocks
                self._level_starts.append((block_start + self.block, np.max(self._medians, axis=0)))

    def _levels(self, first: int, n: int) -> np.ndarray:
        """``(n, n_leads)`` noise level (mV) of samples ``first .. first + n - 1`` (inf before the first block)."""
        while len(self._level_starts) > 1 and self._level_starts[1][0] <= first:
            self._level_starts.popleft()
        out = np.full((n, self.n_leads), np.inf)
        for j, (start, level) in enumerate(self._level_starts):
            end = self._level_starts[j + 1][0] if j + 1 < len(self._level_starts) else first + n
            lo, hi = max(start - first, 0), min(end - first, n)
            if hi > lo:
                out[lo:hi] = level
        return out

    def _decide(self, until: int) -> np.ndarray:
        """Spikes among the narrow pulses before sample ``until`` (every lead's pulses up to ``until + tol`` known)."""
        if not any(len(p) for p in self._pending):
            self._decided = max(self._decided, until)
            return np.zeros(0, np.int64)
        cuts = np.cumsum([0] + [len(p) for p in self._pending])
        spikes, self._last = _coincident(np.concatenate(self._pending), cuts, self._decided, until, self._last,
                                         self.refractory, self.tol, self.need)
        self._decided = max(self._decided, until)
        lo = until - self.tol  # pulses before this can no longer count for a later spike
        self._pending = [p[p >= lo] for p in self._pending]
        return spikes
