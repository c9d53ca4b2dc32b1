"""Causal online multi-lead QRS detector (Pan–Tompkins family) on the internal-rate signal.

Per chunk, vectorised with numpy:

1. QRS band-pass (:func:`edge.dsp.filters.qrs_bandpass`, stateful SOS) of every lead;
2. five-point derivative (mV/s), squared and summed over leads: the energy ``e`` ((mV/s)²);
3. moving-window integration (mean of ``e`` over ``mwi_window_s``), computed from an integer running sum so that
   it is exactly the same whatever the chunking;
4. candidates: samples of the integrated signal that are larger than every sample ``peak_window_s`` before and not
   smaller than every sample ``peak_window_s`` after (so a candidate is known ``peak_window_s`` after its peak).

Per candidate, in Python (a few per second): adaptive signal/noise levels and thresholds, a refractory period, a
T-wave test (a candidate within ``twave_s`` of the last beat whose steepest slope is less than half that of the
last beat is a T wave), and RR-based search-back (when no beat came ``searchback_rr`` × the median RR after the last
one, the largest candidate above the lower threshold is taken). The first ``learning_s`` set the initial levels.

Decisions depend only on sample indices, so the beats are identical whatever the chunking. Detection latency
(after the R peak, at the internal rate, excluding the resampler and the chunk wait): about 0.2 s for beats found
directly (R to end of the QRS energy + ``peak_window_s``), up to ``searchback_rr`` × RR for beats found by
search-back, and up to ``learning_s`` for beats in the learning period.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.dsp.filters import StreamingSOS, group_delay_samples, qrs_bandpass
from edge.ecg import INTERNAL_FS_HZ

#: Fixed-point resolution of the energy before integration ((mV/s)² per unit).
_ENERGY_QUANTUM = 1e-6


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


class OnlineQRSDetector:
    """Streaming QRS detector: ``push`` chunks of ``(n, n_leads)`` mV at ``fs_hz``, get :class:`Peak` lists.

    Parameters
    ----------
    fs_hz
        Sampling rate of the input (Hz); the edge feeds :data:`edge.ecg.INTERNAL_FS_HZ`.
    n_leads
        Number of leads (columns) combined for detection.
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
    """

    def __init__(
        self,
        fs_hz: float = INTERNAL_FS_HZ,
        n_leads: int = 2,
        mwi_window_s: float = 0.15,
        peak_window_s: float = 0.08,
        refractory_s: float = 0.2,
        twave_s: float = 0.36,
        searchback_rr: float = 1.66,
        learning_s: float = 2.0,
        min_energy: float = 1.0,
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
        sos = qrs_bandpass(fs_hz)
        self._bandpass = StreamingSOS(sos, self.n_leads)
        self.filter_delay = round(group_delay_samples(sos, 10.0, fs_hz))
        self._derivative_gain = (fs_hz / 8.0) ** 2 / _ENERGY_QUANTUM
        self._history = self.half * 2 + self.window + self.filter_delay + 4
        self.reset()

    def reset(self) -> None:
        """Forget the stream: filter state, buffers, levels and RR history."""
        self._bandpass.reset()
        self.samples_in = 0
        self._tail = np.zeros((4, self.n_leads))  # last 4 band-passed samples, for the derivative
        self._csum = np.zeros(self.window, dtype=np.int64)  # last `window` running sums of quantised energy
        self._mwi = np.zeros(0)  # integrated energy, energy and band-passed power of the last samples
        self._energy = np.zeros(0)
        self._power = np.zeros(0)
        self._next_eval = 0  # first index not yet tested as a candidate
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
        filtered = np.concatenate((self._tail, self._bandpass.push(x)))
        self._tail = filtered[-4:]
        derivative = 2.0 * filtered[4:] + filtered[3:-1] - filtered[1:-3] - 2.0 * filtered[:-4]
        quantised = np.rint((derivative * derivative).sum(axis=1) * self._derivative_gain).astype(np.int64)
        csum = np.cumsum(quantised)
        csum += self._csum[-1]
        csum_all = np.concatenate((self._csum, csum))
        self._csum = csum_all[-self.window :]
        mwi = (csum_all[self.window :] - csum_all[:-self.window]) * (_ENERGY_QUANTUM / self.window)
        energy = quantised * _ENERGY_QUANTUM
        power = (filtered[4:] * filtered[4:]).sum(axis=1)
        start = self.samples_in
        self.samples_in += n
        self._mwi = np.concatenate((self._mwi, mwi))
        self._energy = np.concatenate((self._energy, energy))
        self._power = np.concatenate((self._power, power))
        if not self._learned:
            learn = mwi[: max(0, self.learning - start)]
            if learn.size:
                self._learn_max = max(self._learn_max, float(learn.max()))
                self._learn_sum += float(learn.sum())
        beats = self._decide_up_to(self.samples_in - self.half)
        self._mwi = self._mwi[-self._history :]
        self._energy = self._energy[-self._history :]
        self._power = self._power[-self._history :]
        return beats

    def flush(self) -> list[Peak]:
        """End of stream: test the last samples with the look-ahead there is and decide what is pending."""
        return self._decide_up_to(self.samples_in, final=True)

    # ------------------------------------------------------------------------------------------ candidates
    def _decide_up_to(self, end: int, final: bool = False) -> list[Peak]:
        """Find the candidates with index in ``[_next_eval, end)`` and run the decisions up to ``end``."""
        beats: list[Peak] = []
        buf_start = self.samples_in - self._mwi.size
        lo = max(self._next_eval, buf_start + 1)
        if end > lo:
            seg = self._mwi[lo - 1 - buf_start : end + 1 - buf_start]
            core = seg[1 : end - lo + 1]
            rising = core > seg[: end - lo]
            if final:
                falling = np.append(core[:-1] >= seg[2 : end - lo + 1], True)
            else:
                falling = core >= seg[2:]
            for j in (np.flatnonzero(rising & falling & (core >= self.min_energy)) + lo).tolist():
                candidate = self._candidate(j, buf_start)
                if candidate is not None:
                    self._decide_in_order(candidate, beats)
            self._next_eval = end
        if not self._learned and (end >= self.learning or final):
            self._finish_learning(min(end, self.learning), beats)
        if self._learned:
            self._run_deadlines(end, beats)
        return beats

    def _candidate(self, j: int, buf_start: int) -> _Candidate | None:
        """The candidate at index ``j`` if it is the maximum within ``± half`` samples (look-ahead as available)."""
        k = j - buf_start
        value = self._mwi[k]
        if self._mwi[max(0, k - self.half) : k].max(initial=0.0) >= value:
            return None
        if self._mwi[k + 1 : k + 1 + self.half].max(initial=0.0) > value:
            return None
        lo = max(0, k - self.window + 1)
        slope = float(np.sqrt(self._energy[lo : k + 1].max()))
        r_sample = buf_start + lo + int(np.argmax(self._power[lo : k + 1])) - self.filter_delay
        return _Candidate(j, float(value), slope, max(0, r_sample))

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
    def _decide(self, c: _Candidate, beats: list[Peak], update_noise: bool) -> None:
        last = self._last
        if last is not None and c.index - last.index < self.refractory:
            return
        if c.energy >= self.threshold:
            if last is not None and c.index - last.index < self.twave and c.slope < 0.5 * last.slope:
                if update_noise:
                    self.noise_level += 0.125 * (c.energy - self.noise_level)
                return
            self.signal_level += 0.125 * (c.energy - self.signal_level)
            self._accept(c, beats, searchback=False)
            return
        if update_noise:
            self.noise_level += 0.125 * (c.energy - self.noise_level)
        self._since_last.append(c)

    def _accept(self, c: _Candidate, beats: list[Peak], searchback: bool) -> None:
        if self._last is not None:
            self._rr = [*self._rr[-7:], c.index - self._last.index]
        self._last = c
        self._since_last = []
        rr = float(np.median(self._rr)) if self._rr else self.fs_hz
        self._deadline = c.index + self.searchback_rr * rr
        beats.append(Peak(c.r_sample, c.energy, searchback))

    def _run_deadlines(self, until: int, beats: list[Peak]) -> None:
        """Search back at every deadline before ``until`` (all candidates up to it are known by then)."""
        while self._deadline is not None and self._deadline < until:
            best = max(self._since_last, key=lambda c: c.energy, default=None)
            if best is None or best.energy < 0.5 * self.threshold:
                self._deadline += float(np.median(self._rr)) if self._rr else self.fs_hz
                continue
            later = [c for c in self._since_last if c.index > best.index]
            self.signal_level += 0.25 * (best.energy - self.signal_level)
            self._accept(best, beats, searchback=True)
            for c in later:
                self._run_deadlines(c.index, beats)
                self._decide(c, beats, update_noise=False)
