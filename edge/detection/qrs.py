"""Causal online multi-lead QRS detector (Pan–Tompkins family) on the internal-rate signal.

Per chunk, vectorised with numpy:

1. QRS band-pass (:func:`edge.dsp.filters.qrs_bandpass`) and five-point derivative of every lead, run as one
   causal FIR (the band-pass's impulse response, cut at 1e-6 of its energy, convolved with the derivative) over a
   preallocated history; squared (and quantised) per lead and summed over leads this gives the slope energy ``e``
   ((mV/s)²);
3. moving-window integration (mean of ``e`` over ``mwi_window_s``), computed from an integer running sum so that
   it is exactly the same whatever the chunking;
4. candidates: samples of the integrated signal that are larger than every sample ``peak_window_s`` before and not
   smaller than every sample ``peak_window_s`` after (so a candidate is known ``peak_window_s`` after its peak).

Per candidate, in Python (a few per second): per-lead integrated energies (each lead's largest within
``± peak_window_s``); once the first beats have set each lead's beat level, every lead's energy is capped at
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

from dataclasses import dataclass

import numpy as np

from edge.dsp.filters import five_point_derivative, group_delay_samples, impulse_response, qrs_bandpass
from edge.dsp.history import History
from edge.ecg import INTERNAL_FS_HZ

#: Fixed-point resolution of the energy before integration ((mV/s)² per unit).
_ENERGY_QUANTUM = 1e-6
_LEAD_LEARN_BEATS = 8  # the per-lead beat levels start as the median over this many first beats
_BLOCK = 4096  # samples filtered per step (bounds the memory used by long chunks)


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
    leads: np.ndarray  # per-lead integrated energy, largest within ± peak_window_s ((mV/s)²)


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
        self._x = History(self.n_leads, keep=look + self._band.size + slope_fir.size, window=slope_fir.size)
        # rows: running sum of the lead-summed quantised slope energy, integrated energy, then the quantised slope
        # energy of every lead (all in integer units)
        self._energy = History(2 + self.n_leads, keep=look, dtype=np.int64)
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
        self.lead_signal = np.zeros(self.n_leads)  # per-lead integrated energy at beats ((mV/s)²)
        self._first_leads: list[np.ndarray] = []
        self._lead_cap: np.ndarray | None = None  # lead_cap × lead_signal, once the first beats set it

    # ------------------------------------------------------------------------------------------ thresholds
    @property
    def threshold(self) -> float:
        """Main detection threshold on the integrated energy ((mV/s)²)."""
        return self.noise_level + 0.25 * (self.signal_level - self.noise_level)

    # ------------------------------------------------------------------------------------------ streaming
    def push(self, x: np.ndarray) -> list[Peak]:
        """Feed ``x`` ``(n, n_leads)`` mV and return the beats decided with it, in time order."""
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.n_leads:
            raise ValueError(f"expected a chunk of shape (n, {self.n_leads}), got {x.shape}")
        n = x.shape[0]
        if n == 0:
            return []
        history = self._x
        if self.samples_in == 0:
            history.reset(fill=x[0])  # the stream is taken as constant before its start: no start-up step
        history.append(x.T)
        first = history.end - n - self._slope_taps.size + 1  # window column of the first new sample
        c = self._energy.reserve(n)
        data = self._energy.data
        leads = data[2:, c : c + n]
        # one FIR per lead (einsum sums each output's taps in the same order whatever the chunk size)
        for b in range(0, n, _BLOCK):  # one step for a live chunk
            slope = np.einsum("lnk,k->ln", history.windows[:, first + b : first + min(n, b + _BLOCK)], self._slope_taps)
            np.rint(np.square(slope, out=slope), out=leads[:, b : b + _BLOCK], casting="unsafe")
        # running sum of the lead-summed energy, continued in place from the sample before the chunk
        csum = data[0, c - 1 : c + n]
        np.add.reduce(leads, axis=0, out=csum[1:])
        np.add.accumulate(csum, out=csum)
        mwi = np.subtract(csum[1:], data[0, c - self.window : c + n - self.window], out=data[1, c : c + n])
        if not self._learned:
            learn = mwi[: max(0, self.learning - self.samples_in)]
            if learn.size:
                self._learn_max = max(self._learn_max, float(learn.max()) * self._energy_scale)
                self._learn_sum += float(learn.sum()) * self._energy_scale
        self.samples_in += n
        return self._decide_up_to(self.samples_in - self.half)

    def flush(self) -> list[Peak]:
        """End of stream: test the last samples with the look-ahead there is and decide what is pending."""
        return self._decide_up_to(self.samples_in, final=True)

    # ------------------------------------------------------------------------------------------ candidates
    def _decide_up_to(self, end: int, final: bool = False) -> list[Peak]:
        """Find the candidates with index in ``[_next_eval, end)`` and run the decisions up to ``end``."""
        beats: list[Peak] = []
        lo = self._next_eval
        if end > lo:
            data = self._energy.data[1]
            c = lo - self._energy.start
            m = end - lo
            # a candidate rises from the sample before it and does not fall to the one after
            rises = np.greater(data[c : c + m], data[c - 1 : c + m - 1])
            rises &= np.greater_equal(data[c : c + m], data[c + 1 : c + m + 1])
            if final:
                rises[-1] = data[c + m - 1] > data[c + m - 2]
            for j in rises.nonzero()[0].tolist():
                candidate = self._candidate(j + lo)
                if candidate is not None:
                    self._decide_in_order(candidate, beats)
            self._next_eval = end
        if not self._learned and (end >= self.learning or final):
            self._finish_learning(min(end, self.learning), beats)
        if self._learned:
            self._run_deadlines(end, beats)
        return beats

    def _candidate(self, j: int) -> _Candidate | None:
        """The candidate at index ``j`` if it is the maximum within ``± half`` samples (look-ahead as available)."""
        data = self._energy.data[1]
        k = self._energy.column(j)
        value = int(data[k])
        if value * self._energy_scale < self.min_energy or data[k - self.half : k].max() >= value:
            return None
        if data[k + 1 : min(k + 1 + self.half, self._energy.end)].max(initial=0) > value:
            return None
        # steepest lead-summed slope in the window: the largest step of the running sum there
        slope = float(np.sqrt(np.diff(self._energy.data[0, k - self.window : k + 1]).max() * _ENERGY_QUANTUM))
        # per-lead integrated energy, largest within ± half (the leads' QRS need not peak together)
        per_lead = self._energy.data[2:, k - self.half - self.window + 1 : min(k + 1 + self.half, self._energy.end)]
        cs = np.cumsum(per_lead, axis=1)
        lead_mwi = cs[:, self.window - 1 :].copy()
        lead_mwi[:, 1:] -= cs[:, : -self.window]
        leads = lead_mwi.max(axis=1) * self._energy_scale
        # R peak: largest band-passed power (summed over leads) in the integration window, less the filter delay
        k = self._x.column(j)
        segment = self._x.data[:, k - self.window - self._band.size + 2 : k + 1]
        power = sum(np.convolve(lead, self._band, mode="valid") ** 2 for lead in segment)
        r_sample = j - self.window + 1 + int(np.argmax(power)) - self.filter_delay
        return _Candidate(j, value * self._energy_scale, slope, max(0, r_sample), leads)

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
        return float(np.minimum(c.leads, self._lead_cap).sum())

    def _artefact(self, c: _Candidate) -> bool:
        """True for energy in one lead only, far above that lead's beat level (electrode and motion artefacts)."""
        if self._lead_cap is None or self.n_leads < 2:
            return False
        # a lead whose beat level is 0 gives inf (x / 0) or NaN (0 / 0, which compares False): no warning for it
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = c.leads / self.lead_signal
        return bool(ratio.max() > self.solo_ratio and np.count_nonzero(ratio >= self.solo_floor) <= 1)

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
            self.lead_signal += 0.125 * (np.minimum(c.leads, self._lead_cap) - self.lead_signal)
            self._lead_cap = self.lead_cap * self.lead_signal
        else:
            self._first_leads.append(c.leads)
            if len(self._first_leads) == _LEAD_LEARN_BEATS:
                self.lead_signal = np.median(self._first_leads, axis=0)
                self._lead_cap = self.lead_cap * self.lead_signal
        rr = float(np.median(self._rr)) if self._rr else self.fs_hz
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
                self._deadline += float(np.median(self._rr)) if self._rr else self.fs_hz
                continue
            later = [c for c in self._since_last if c.index > best.index]
            self.signal_level += 0.25 * (energy - self.signal_level)
            self._accept(best, energy, beats, searchback=True)
            for c in later:
                self._run_deadlines(c.index, beats)
                self._decide(c, beats, update_noise=False)
