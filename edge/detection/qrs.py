"""Causal online multi-lead QRS detector (Pan–Tompkins family) on the internal-rate signal.

Per chunk, in one compiled (numba) call, :func:`_push`:

1. QRS band-pass (:func:`edge.dsp.filters.qrs_bandpass`) and five-point derivative of every lead, run as one
   causal FIR (the band-pass's impulse response, cut at 1e-6 of its energy, convolved with the derivative) over a
   preallocated history; squared (and quantised) per lead and summed over leads this gives the slope energy ``e``
   ((mV/s)²);
3. moving-window integration (mean of ``e`` over ``mwi_window_s``), computed from an integer running sum so that
   it is exactly the same whatever the chunking;
4. candidates: samples of the integrated signal that are larger than every sample ``peak_window_s`` before and not
   smaller than every sample ``peak_window_s`` after (so a candidate is known ``peak_window_s`` after its peak),
   with the features the decisions use (per-lead energies, steepest slope, R-peak sample).

Per candidate, in Python (a few per second), on its per-lead integrated energies (each lead's largest within
``± peak_window_s``): once the first beats have set each lead's beat level, every lead's energy is capped at
``lead_cap`` × its level before it is summed for the decisions (a lead swamped by an electrode or motion artefact
cannot carry a candidate over the threshold on its own), and a candidate whose energy is in one lead only, at
more than ``solo_ratio`` × that lead's level while every other lead stays below ``solo_floor`` × its own, is an
artefact and ignored (it neither counts as noise nor enters search-back). Then adaptive signal/noise levels and
thresholds, a refractory period, a T-wave test (a candidate within ``twave_s`` of the last beat whose steepest
slope is less than half that of the last beat is a T wave), and RR-based search-back (when no beat came
``searchback_rr`` × the median RR after the last one, the largest candidate above the lower threshold is taken).
The first ``learning_s`` set the initial levels.

Decisions depend only on sample indices, so the beats are identical whatever the chunking. Detection latency
(after the R peak, at the internal rate, excluding the resampler and the chunk wait): about 0.2 s for beats found
directly (R to end of the QRS energy + ``peak_window_s``), up to ``searchback_rr`` × RR for beats found by
search-back, and up to ``learning_s`` for beats in the learning period.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numba
import numpy as np

from edge.dsp.filters import five_point_derivative, group_delay_samples, impulse_response, qrs_bandpass
from edge.dsp.history import History
from edge.ecg import INTERNAL_FS_HZ

#: Fixed-point resolution of the energy before integration ((mV/s)² per unit).
_ENERGY_QUANTUM = 1e-6
_LEAD_LEARN_BEATS = 8  # the per-lead beat levels start as the median over this many first beats
_BLOCK = 4096  # samples filtered per step (bounds the scratch memory used by long chunks)


@numba.njit(cache=True)
def _correlate(x: np.ndarray, start: int, taps: np.ndarray, out: np.ndarray, scratch: np.ndarray) -> None:
    """``out[i] = dot(x[start + i : start + i + taps.size], taps)`` for every ``i < out.size`` (a causal FIR with
    reversed taps), each output summed in the order of :func:`edge.dsp.resample.dot`
    (``np.einsum``'s); the outputs are computed side by side (vectorised).
    ``scratch`` holds at least ``out.size`` float64 (the second lane's partial sums)."""
    m = out.size
    n = taps.size
    acc0 = out
    acc1 = scratch[:m]
    acc0[:] = 0.0
    acc1[:] = 0.0
    k = 0
    while n - k >= 8:
        t0, t1, t2, t3 = taps[k], taps[k + 1], taps[k + 2], taps[k + 3]
        t4, t5, t6, t7 = taps[k + 4], taps[k + 5], taps[k + 6], taps[k + 7]
        xs = x[start + k : start + k + m + 8]  # a view from 0: its indices need no wrap-around test (vectorises)
        for i in range(m):
            ab30 = xs[i + 6] * t6 + acc0[i]
            ab31 = xs[i + 7] * t7 + acc1[i]
            ab20 = xs[i + 4] * t4 + ab30
            ab21 = xs[i + 5] * t5 + ab31
            ab10 = xs[i + 2] * t2 + ab20
            ab11 = xs[i + 3] * t3 + ab21
            acc0[i] = xs[i] * t0 + ab10
            acc1[i] = xs[i + 1] * t1 + ab11
        k += 8
    while k < n:
        xs = x[start + k : start + k + m + 2]
        t0 = taps[k]
        for i in range(m):
            acc0[i] = xs[i] * t0 + acc0[i]
        if k + 1 < n:
            t1 = taps[k + 1]
            for i in range(m):
                acc1[i] = xs[i + 1] * t1 + acc1[i]
        k += 2
    for i in range(m):
        out[i] = 0.0 + (acc0[i] + acc1[i])


@numba.njit(cache=True)
def _slope_energy(x: np.ndarray, xdata: np.ndarray, xcol: int, taps: np.ndarray, edata: np.ndarray, ecol: int,
                  window: int, scratch: np.ndarray) -> None:
    """Append chunk ``x`` ``(n, L)`` mV to the lead history ``xdata[:, xcol:]`` and its energies to ``edata[:, ecol:]``.

    Rows of ``edata``: 0 the running sum of the lead-summed quantised slope energy, 1 the integrated energy (its
    difference over ``window`` samples), ``2 + l`` lead ``l``'s quantised slope energy ``rint(slope²)`` (all integer
    units of :data:`_ENERGY_QUANTUM`); the slope is the FIR ``taps`` (reversed, scaled) over the lead history.
    ``scratch`` is ``(2, _BLOCK)`` float64.
    """
    n = x.shape[0]
    n_leads = xdata.shape[0]
    for i in range(n):
        for lead in range(n_leads):
            xdata[lead, xcol + i] = x[i, lead]
    first = xcol + 1 - taps.size  # column of the oldest sample in the first new sample's window
    slope = scratch[0]
    for b in range(0, n, _BLOCK):
        m = min(_BLOCK, n - b)
        for lead in range(n_leads):
            _correlate(xdata[lead], first + b, taps, slope[:m], scratch[1])
            row = edata[2 + lead]
            for i in range(m):
                row[ecol + b + i] = np.int64(np.rint(slope[i] * slope[i]))
    csum = edata[0]
    mwi = edata[1]
    for i in range(ecol, ecol + n):
        total = np.int64(0)
        for lead in range(n_leads):
            total += edata[2 + lead, i]
        csum[i] = csum[i - 1] + total
        mwi[i] = csum[i] - csum[i - window]


@numba.njit(cache=True)
def _scan(edata: np.ndarray, xdata: np.ndarray, ecol0: int, xcol0: int, lo: int, hi: int, stop: int, final: bool,
          half: int, window: int, delay: int, min_energy: float, scale: float, band_reversed: np.ndarray,
          found: np.ndarray) -> int:
    """The candidates with global index in ``[lo, hi)``, in order, written to ``found``; returns how many.

    A candidate rises from the sample before it and does not fall to the one after (with ``final``, the last sample
    needs only the rise), has an integrated energy of at least ``min_energy`` ((mV/s)², ``scale`` per integer unit),
    is larger than every sample ``half`` before it and not smaller than every sample up to ``half`` after it (and
    before ``stop``). Global index ``j`` is column ``ecol0 + j`` of ``edata`` and ``xcol0 + j`` of ``xdata``.

    Row ``c`` of ``found`` (``(>= count, 4 + n_leads)`` float64) is candidate ``c``: ``(j, R-peak sample,
    integrated energy ((mV/s)²), steepest slope (mV/s), per-lead integrated energies ((mV/s)²) ...)``. The slope is
    the square root of the largest one-sample step of the running sum in the integration window; a lead's energy is
    its largest ``window`` sum within ``± half``; the R peak is the sample of largest lead-summed band-passed power
    (``band_reversed``; the dot products are ``np.dot``'s, as in ``np.convolve``) in the integration window, less
    ``delay``.
    """
    mwi = edata[1]
    n_leads = xdata.shape[0]
    n_band = band_reversed.size
    count = 0
    for j in range(lo, hi):
        k = ecol0 + j
        value = mwi[k]
        if value <= mwi[k - 1]:
            continue
        if not (final and j == hi - 1) and value < mwi[k + 1]:
            continue
        if value * scale < min_energy:
            continue
        if mwi[k - half : k].max() >= value:
            continue
        if j + 1 < stop and mwi[k + 1 : k + 1 + min(half, stop - j - 1)].max() > value:
            continue
        step = np.int64(0)
        for i in range(k - window, k):
            step = max(step, edata[0, i + 1] - edata[0, i])
        found[count, 0] = j
        found[count, 2] = value * scale
        found[count, 3] = np.sqrt(step * _ENERGY_QUANTUM)
        top = min(k + 1 + half, ecol0 + stop)
        for lead in range(n_leads):
            row = edata[2 + lead]
            total = np.int64(0)
            for i in range(k - half - window + 1, k - half + 1):
                total += row[i]
            best = total
            for i in range(k - half + 1, top):  # the window ending at column i
                total += row[i] - row[i - window]
                best = max(best, total)
            found[count, 4 + lead] = best * scale
        kx = xcol0 + j
        begin = kx - window - n_band + 2
        best_power = -1.0
        at = 0
        for t in range(window):
            power = 0.0
            for lead in range(n_leads):
                v = np.dot(xdata[lead, begin + t : begin + t + n_band], band_reversed)
                power += v * v
            if power > best_power:
                best_power, at = power, t
        found[count, 1] = max(0, j - window + 1 + at - delay)
        count += 1
    return count


@numba.njit(cache=True)
def _push(x: np.ndarray, xdata: np.ndarray, edata: np.ndarray, xcol0: int, ecol0: int, lo: int, stop: int,
          half: int, window: int, delay: int, min_energy: float, scale: float, taps: np.ndarray,
          band_reversed: np.ndarray, scratch: np.ndarray, found: np.ndarray) -> int:
    """One chunk ``x`` ending at global sample ``stop``: :func:`_slope_energy`, then :func:`_scan` of
    ``[lo, stop - half)`` (the samples with a full look-ahead)."""
    n = x.shape[0]
    _slope_energy(x, xdata, xcol0 + stop - n, taps, edata, ecol0 + stop - n, window, scratch)
    if stop - half <= lo:
        return 0
    return _scan(edata, xdata, ecol0, xcol0, lo, stop - half, stop, False, half, window, delay, min_energy, scale,
                 band_reversed, found)


def _numpy_sum(values: list[float]) -> float:
    """``float(np.sum(values))`` for fewer than 128 values, bit for bit: numpy's pairwise order (sequential below 8
    values, else eight interleaved partial sums combined as a tree, then the rest one by one)."""
    n = len(values)
    if n < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    r = values[:8]
    i = 8
    while i < n - n % 8:
        for lane in range(8):
            r[lane] += values[i + lane]
        i += 8
    total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for v in values[i:]:
        total += v
    return total


@dataclass(frozen=True)
class Peak:
    """One detected QRS complex.

    Attributes:
        sample: R-peak index at the detector's rate, counted from the first sample pushed.
        energy: integrated QRS energy of the detection ((mV/s)²).
        searchback: True when the beat was found by RR search-back (below the main threshold).
    """

    sample: int
    energy: float
    searchback: bool


@dataclass
class _Candidate:
    index: int  # peak of the integrated energy (samples)
    energy: float  # integrated energy at the peak ((mV/s)²)
    slope: float  # steepest lead-combined slope in the integration window (mV/s)
    r_sample: int  # R-peak estimate (samples)
    leads: list[float]  # per-lead integrated energy, largest within ± peak_window_s ((mV/s)²)


class OnlineQRSDetector:
    """Streaming QRS detector: ``push`` chunks of ``(n, n_leads)`` mV at ``fs_hz``, get :class:`Peak` lists.

    Parameters
    ----------
    fs_hz
        Sampling rate of the input (Hz); the edge feeds :data:`edge.ecg.INTERNAL_FS_HZ`.
    n_leads
        Number of leads (columns) combined for detection.
    band_hz
        QRS band-pass edges (Hz).
    band_order
        Butterworth order of the QRS band-pass (per edge).
    mwi_window_s
        Length of the moving-window integrator (s).
    peak_window_s
        Half-width of the local-maximum test on the integrated energy (s); also the confirmation wait.
    refractory_s
        No second beat within this time of a beat (s).
    twave_s
        Candidates closer than this to the last beat get the T-wave slope test (s).
    searchback_rr
        Search-back starts after this many median RR intervals without a beat.
    learning_s
        Initial period (s) whose energy sets the first signal and noise levels.
    min_energy
        Candidates below this integrated energy ((mV/s)²) are ignored (flat lines, quantisation noise).
    lead_cap
        Each lead's integrated energy is capped at this many times its beat level for the decisions.
    solo_ratio, solo_floor
        Artefact test: one lead above ``solo_ratio`` × its beat level, all others below ``solo_floor`` × theirs.
    """

    def __init__(
        self,
        fs_hz: float = INTERNAL_FS_HZ,
        n_leads: int = 2,
        band_hz: tuple[float, float] = (5.0, 15.0),
        band_order: int = 2,
        mwi_window_s: float = 0.15,
        peak_window_s: float = 0.08,
        refractory_s: float = 0.2,
        twave_s: float = 0.36,
        searchback_rr: float = 1.66,
        learning_s: float = 2.0,
        min_energy: float = 1.0,
        lead_cap: float = 2.0,
        solo_ratio: float = 2.0,
        solo_floor: float = 0.05,
    ):
        self.fs_hz = float(fs_hz)
        self.n_leads = int(n_leads)
        self.window = max(1, round(mwi_window_s * fs_hz))
        self.half = max(1, round(peak_window_s * fs_hz))
        self.refractory = round(refractory_s * fs_hz)
        self.twave = round(twave_s * fs_hz)
        self.searchback_rr = float(searchback_rr)
        self.learning = round(learning_s * fs_hz)
        self.min_energy = float(min_energy)
        self.lead_cap = float(lead_cap)
        self.solo_ratio = float(solo_ratio)
        self.solo_floor = float(solo_floor)
        sos = qrs_bandpass(fs_hz, *band_hz, order=band_order)
        self._band = impulse_response(sos)
        slope_fir = np.convolve(self._band, five_point_derivative(fs_hz))
        # reversed (applied to windows oldest-first) and scaled so that the squared output is in energy quanta
        self._slope_taps = slope_fir[::-1] * np.sqrt(1.0 / _ENERGY_QUANTUM)
        self.filter_delay = round(group_delay_samples(sos, 10.0, fs_hz))
        self._energy_scale = _ENERGY_QUANTUM / self.window  # integrated energy per integer unit ((mV/s)²)
        look = 2 * self.half + self.window + 8  # samples read behind the newest one when deciding
        self._band_reversed = np.ascontiguousarray(self._band[::-1])
        self._x = History(self.n_leads, keep=look + self._band.size + slope_fir.size)
        # rows: running sum of the lead-summed quantised slope energy, integrated energy, then the quantised slope
        # energy of every lead (all in integer units)
        self._energy = History(2 + self.n_leads, keep=look, dtype=np.int64)
        # _push's fixed arguments; its scratch: the slope of one lead and one block, and its second partial sums
        self._constants = (self.half, self.window, self.filter_delay, self.min_energy, self._energy_scale,
                           self._slope_taps, self._band_reversed, np.empty((2, _BLOCK)))
        self.reset()

    def reset(self) -> None:
        """Forget the stream: histories, levels and RR history."""
        self.samples_in = 0
        self._energy.reset()
        self._next_eval = 1  # first index not yet tested as a candidate
        self._learn_max = 0.0
        self._learn_sum = 0.0
        self._learned = False
        self._waiting: list[_Candidate] = []  # candidates of the learning period, decided once it ends
        self.signal_level = 0.0
        self.noise_level = 0.0
        self._last: _Candidate | None = None
        self._since_last: list[_Candidate] = []  # noise candidates after the last beat (search-back pool)
        self._rr: list[int] = []
        self._deadline: float | None = None
        self._lead_level = [0.0] * self.n_leads  # per-lead integrated energy at beats ((mV/s)²)
        self._first_leads: list[list[float]] = []
        self._lead_cap: list[float] | None = None  # lead_cap × lead level, once the first beats set it
        self._grow(round(self.fs_hz))  # _scan's output, one row per candidate (room for 1 s; longer chunks grow it)

    @property
    def lead_signal(self) -> np.ndarray:
        """Per-lead integrated energy at beats ((mV/s)², ``(n_leads,)``): the levels of the lead cap and the
        artefact test."""
        return np.array(self._lead_level)

    @property
    def learned(self) -> bool:
        """Whether the learning period is over (the first levels are set)."""
        return self._learned

    # ------------------------------------------------------------------------------------------ thresholds
    @property
    def threshold(self) -> float:
        """Main detection threshold on the integrated energy ((mV/s)²)."""
        return self.noise_level + 0.25 * (self.signal_level - self.noise_level)

    # ------------------------------------------------------------------------------------------ streaming
    def push(self, x: np.ndarray) -> list[Peak]:
        """Feed ``x`` ``(n, n_leads)`` mV and return the beats decided with it, in time order."""
        x = np.asarray(x)
        shape = x.shape
        if len(shape) != 2 or shape[1] != self.n_leads:
            raise ValueError(f"expected a chunk of shape (n, {self.n_leads}), got {shape}")
        n = shape[0]
        if n == 0:
            return []
        xs, energy = self._x, self._energy
        if self.samples_in == 0:
            xs.reset(fill=x[0])  # the stream is taken as constant before its start: no start-up step
        xs.reserve(n)
        energy.reserve(n)
        lo, stop = self._next_eval, self.samples_in + n
        if stop - lo > self._room:
            self._grow(stop - lo)
        count = _push(x, xs.data, energy.data, -xs.start, -energy.start, lo, stop, *self._constants, self._found)
        if not self._learned and self.samples_in < self.learning:
            ecol = self._energy.end - n
            learn = self._energy.data[1, ecol : ecol + min(n, self.learning - self.samples_in)]
            self._learn_max = max(self._learn_max, float(learn.max()) * self._energy_scale)
            self._learn_sum += float(learn.sum()) * self._energy_scale
        return self.pushed(lo, stop, count)

    def pushed(self, lo: int, stop: int, count: int) -> list[Peak]:
        """The decisions after a compiled push of samples up to global index ``stop`` that tested ``[lo, ...)`` and
        left ``count`` candidates in :attr:`_found` (:meth:`push`'s second half, also run after the fused kernel of
        :class:`edge.detection.beats.BeatStream`)."""
        self.samples_in = stop
        end = stop - self.half
        if count == 0 and self._learned and (self._deadline is None or self._deadline >= end):
            if end > lo:
                self._next_eval = end  # nothing to decide (most chunks)
            return []
        return self._decide_up_to(end, count)

    def flush(self) -> list[Peak]:
        """End of stream: test the last samples with the look-ahead there is and decide what is pending."""
        lo, stop = self._next_eval, self.samples_in
        count = 0
        if stop > lo:
            if stop - lo > self._room:
                self._grow(stop - lo)
            half, window, delay, min_energy, scale, _, band_reversed, _ = self._constants
            count = _scan(self._energy.data, self._x.data, -self._energy.start, -self._x.start, lo, stop, stop, True,
                          half, window, delay, min_energy, scale, band_reversed, self._found)
        return self._decide_up_to(stop, count, final=True)

    # ------------------------------------------------------------------------------------------ candidates
    def _grow(self, m: int) -> None:
        """Make :attr:`_found` large enough for the candidates of ``m`` tested samples (they are more than ``half``
        samples apart)."""
        self._found = np.empty((m // self.half + 2, 4 + self.n_leads))
        self._room = (self._found.shape[0] - 2) * self.half

    def _decide_up_to(self, end: int, count: int, final: bool = False) -> list[Peak]:
        """Run the decisions on the ``count`` candidates :func:`_scan` found before ``end``, then up to ``end``."""
        beats: list[Peak] = []
        for row in self._found[:count].tolist():
            self._decide_in_order(_Candidate(int(row[0]), row[2], row[3], int(row[1]), row[4:]), beats)
        self._next_eval = max(self._next_eval, end)
        if not self._learned and (end >= self.learning or final):
            self._finish_learning(min(end, self.learning), beats)
        if self._learned:
            self._run_deadlines(end, beats)
        return beats

    def _decide_in_order(self, candidate: _Candidate, beats: list[Peak]) -> None:
        if not self._learned:
            self._waiting.append(candidate)
            return
        self._run_deadlines(candidate.index, beats)
        self._decide(candidate, beats, update_noise=True)

    def _finish_learning(self, n_learn: int, beats: list[Peak]) -> None:
        self._learned = True
        self.signal_level = self._learn_max / 3.0
        self.noise_level = 0.5 * self._learn_sum / max(1, n_learn)
        waiting, self._waiting = self._waiting, []
        for candidate in waiting:
            self._decide_in_order(candidate, beats)

    # ------------------------------------------------------------------------------------------ decisions
    def _level(self, c: _Candidate) -> float:
        """The energy a decision uses: each lead's integrated energy capped at ``lead_cap`` × its beat level."""
        if self._lead_cap is None:
            return c.energy
        return _numpy_sum(list(map(min, c.leads, self._lead_cap)))

    def _artefact(self, c: _Candidate) -> bool:
        """True for energy in one lead only, far above that lead's beat level (electrode and motion artefacts)."""
        if self._lead_cap is None or self.n_leads < 2:
            return False
        top, above_floor = 0.0, 0
        for energy, level in zip(c.leads, self._lead_level, strict=True):
            if level:
                ratio = energy / level
            elif energy:
                ratio = math.inf  # a lead whose beat level is 0
            else:
                return False  # 0 / 0 is NaN: the largest ratio is NaN, which is not above solo_ratio
            top = max(top, ratio)
            above_floor += ratio >= self.solo_floor
        return top > self.solo_ratio and above_floor <= 1

    def _decide(self, c: _Candidate, beats: list[Peak], update_noise: bool) -> None:
        last = self._last
        if last is not None and c.index - last.index < self.refractory:
            return
        if self._artefact(c):
            return
        energy = self._level(c)
        if energy >= self.threshold:
            if last is not None and c.index - last.index < self.twave and c.slope < 0.5 * last.slope:
                if update_noise:
                    self.noise_level += 0.125 * (energy - self.noise_level)
                return
            self.signal_level += 0.125 * (energy - self.signal_level)
            self._accept(c, energy, beats, searchback=False)
            return
        if update_noise:
            self.noise_level += 0.125 * (energy - self.noise_level)
        self._since_last.append(c)

    def _accept(self, c: _Candidate, energy: float, beats: list[Peak], searchback: bool) -> None:
        if self._last is not None:
            self._rr = [*self._rr[-7:], c.index - self._last.index]
        self._last = c
        self._since_last = []
        if self._lead_cap is not None:
            self._lead_level = [s + 0.125 * (min(e, cap) - s)
                                for e, cap, s in zip(c.leads, self._lead_cap, self._lead_level, strict=True)]
            self._lead_cap = [self.lead_cap * s for s in self._lead_level]
        else:
            self._first_leads.append(c.leads)
            if len(self._first_leads) == _LEAD_LEARN_BEATS:
                self._lead_level = [float(statistics.median(lead)) for lead in zip(*self._first_leads, strict=True)]
                self._lead_cap = [self.lead_cap * s for s in self._lead_level]
        rr = float(statistics.median(self._rr)) if self._rr else self.fs_hz
        self._deadline = c.index + self.searchback_rr * rr
        beats.append(Peak(c.r_sample, energy, searchback))

    def _run_deadlines(self, until: int, beats: list[Peak]) -> None:
        """Search back at every deadline before ``until`` (all candidates up to it are known by then)."""
        while self._deadline is not None and self._deadline < until:
            best, energy = None, 0.0
            for c in self._since_last:
                e = self._level(c)
                if e > energy:
                    best, energy = c, e
            if best is None or energy < 0.5 * self.threshold:
                self._deadline += float(statistics.median(self._rr)) if self._rr else self.fs_hz
                continue
            later = [c for c in self._since_last if c.index > best.index]
            self.signal_level += 0.25 * (energy - self.signal_level)
            self._accept(best, energy, beats, searchback=True)
            for c in later:
                self._run_deadlines(c.index, beats)
                self._decide(c, beats, update_noise=False)
