"""Streaming rational-ratio polyphase FIR resampler with explicit state.

The low-pass filter is designed as :func:`scipy.signal.resample_poly` does (Kaiser window, beta 5, cut-off at the
lower Nyquist rate), with a half length of ``half_len_factor * max(up, down)`` taps at the upsampled rate (scipy
uses 10, the edge 5: half the delay; at 360 -> 250 Hz the gain is -0.7 dB at 100 Hz and < -70 dB from 200 Hz).

Output sample ``k`` is aligned exactly like ``resample_poly``'s: it estimates the input at time ``k * down / up``
input samples, so the output has **no index shift** to compensate; it is only emitted late. Output ``k`` needs
input samples up to ``floor((k * down + half_len) / up)``: :attr:`StreamingResampler.delay_s` of look-ahead
(``half_len_factor`` output samples when downsampling: 20 ms at 250 Hz out).

Each push is one compiled (numba) call, :func:`_polyphase`, over a preallocated channel-major history.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numba
import numpy as np
from scipy.signal import firwin

from edge.dsp.history import History

#: Largest up/down factor accepted when approximating a non-rational rate ratio.
MAX_FACTOR = 1000


@numba.njit(cache=True, inline="always")
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` over two 1-D arrays of the same length, summed in the order in which
    numpy's ``np.einsum`` sums a contiguous contraction on x86-64 (its SSE2 baseline build: two lanes, four vectors
    per step, multiply then add, no FMA), so that the compiled resampler gives the numpy one's outputs bit for bit."""
    n = a.size
    acc0 = 0.0
    acc1 = 0.0
    k = 0
    while n - k >= 8:
        ab30 = a[k + 6] * b[k + 6] + acc0
        ab31 = a[k + 7] * b[k + 7] + acc1
        ab20 = a[k + 4] * b[k + 4] + ab30
        ab21 = a[k + 5] * b[k + 5] + ab31
        ab10 = a[k + 2] * b[k + 2] + ab20
        ab11 = a[k + 3] * b[k + 3] + ab21
        acc0 = a[k] * b[k] + ab10
        acc1 = a[k + 1] * b[k + 1] + ab11
        k += 8
    while k < n:
        acc0 = a[k] * b[k] + acc0
        if k + 1 < n:
            acc1 = a[k + 1] * b[k + 1] + acc1
        k += 2
    return 0.0 + (acc0 + acc1)


@functools.lru_cache(maxsize=64)
def _tables(up: int, down: int, half_len: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """The filter and the per-phase tables of one ratio, built once and shared (read-only) by every stream with
    that ratio."""
    h = np.ones(1)
    if half_len:
        h = firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0))
        h = h * (up / h.sum())
    n_taps = -(-h.size // up)
    padded = np.zeros(n_taps * up)
    padded[: h.size] = h
    # bank[p, j] = h[p + (n_taps - 1 - j) * up]: taps of phase p, applied to x[n_hi - n_taps + 1 + j]
    bank = padded.reshape(n_taps, up).T[:, ::-1]
    # Output k = q * up + r (r < up): its oldest input sample is q * down + shift + first[r] (first[r] >= 0), its
    # taps weights[r]
    t = np.arange(up) * down + half_len
    oldest = t // up - n_taps + 1
    shift = int(oldest[0])
    first = oldest - shift
    weights = bank[t % up].copy()
    for table in (h, first, weights):
        table.flags.writeable = False
    return h, shift, first, weights


@numba.njit(cache=True)
def _polyphase(
    data: np.ndarray, column: int, x: np.ndarray, k: int, base: int, up: int, down: int, first: np.ndarray,
    weights: np.ndarray, out: np.ndarray,
) -> None:
    """Copy chunk ``x`` ``(n, C)`` into ``data[:, column : column + n]`` (the channel-major history) and write
    outputs ``k ..`` into ``out`` ``(m, C)``: output ``k + s`` is the dot product of its phase's taps with the
    history from column ``(k + s) // up * down + base + first[(k + s) % up]`` (summed as ``np.einsum`` sums)."""
    n_taps = weights.shape[1]
    for i in range(x.shape[0]):
        for c in range(data.shape[0]):
            data[c, column + i] = x[i, c]
    for s in range(out.shape[0]):
        q, r = divmod(k + s, up)
        oldest = q * down + base + first[r]
        for c in range(data.shape[0]):
            out[s, c] = dot(data[c, oldest : oldest + n_taps], weights[r])


class StreamingResampler:
    """Resample ``(n, C)`` chunks from ``fs_in_hz`` to ``fs_out_hz`` (ratio ``up / down`` in lowest terms).

    Parameters
    ----------
    fs_in_hz, fs_out_hz
        Input and output sampling rates (Hz). Their ratio is approximated by a fraction with terms
        ``<= MAX_FACTOR``; the effective output rate is ``fs_in_hz * up / down``.
    n_channels
        Number of columns of every chunk.
    half_len_factor
        Filter half length in units of ``max(up, down)`` upsampled samples (sets delay and sharpness).

    Notes
    -----
    Each output is a fixed-order sum over the same input samples whatever the chunking, so the output stream
    does not depend on how the input is split.
    """

    def __init__(self, fs_in_hz: float, fs_out_hz: float, n_channels: int, half_len_factor: int = 5):
        if fs_in_hz <= 0 or fs_out_hz <= 0 or n_channels < 1:
            raise ValueError("sampling rates must be positive and n_channels >= 1")
        ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(MAX_FACTOR)
        self.fs_in_hz = float(fs_in_hz)
        self.fs_out_hz = float(fs_out_hz)
        self.n_channels = int(n_channels)
        self.up = ratio.numerator
        self.down = ratio.denominator
        self.half_len = 0 if self.up == self.down else half_len_factor * max(self.up, self.down)
        #: the low-pass filter at the upsampled rate (DC gain ``up``), as ``resample_poly(window=...)`` would use it
        self.filter, self._shift, self._first, self._weights = _tables(self.up, self.down, self.half_len)
        self._phases = (self.up, self.down, self._first, self._weights)  # _polyphase's fixed arguments
        n_taps = self._weights.shape[1]
        # the oldest input of the next output's phase period stays readable (``oldest`` in push is >= 0)
        self._history = History(self.n_channels, keep=n_taps + int(self._first[self.up - 1]))
        self.reset()

    @property
    def delay_s(self) -> float:
        """Look-ahead (s): how long after its nominal time an output sample can be emitted."""
        return self.half_len / (self.up * self.fs_in_hz)

    def reset(self) -> None:
        """Forget all input; the next push starts a new stream at sample 0."""
        self.samples_in = 0
        self.samples_out = 0

    def flush(self) -> np.ndarray:
        """End of stream: the outputs held back for look-ahead, ``(m, C)`` float32, computed as if the last input
        sample went on (as :meth:`push` assumes before the first one). Afterwards every output whose nominal time
        lies within the input has been emitted (``samples_out == floor((samples_in - 1) * up / down) + 1``: a 10.000 s
        record at 500 Hz gives all 2 500 samples at 250 Hz). Call :meth:`reset` before pushing a new stream.
        """
        if self.samples_in == 0 or self.up == self.down:
            return np.empty((0, self.n_channels), dtype=np.float32)
        k_final = (self.samples_in - 1) * self.up // self.down + 1
        samples_in, emitted = self.samples_in, self.samples_out
        last = self._history.data[:, self._history.end - 1]  # the last input sample: the flush pads with it
        tail = self.push(np.repeat(last[None, :], self.half_len // self.up + 2, axis=0))
        self.samples_in = samples_in
        self.samples_out = max(emitted, k_final)
        return tail[: max(0, k_final - emitted)]

    def output_time(self, k_out: float) -> float:
        """Input-sample time (in input samples, fractional) that output sample ``k_out`` represents."""
        return k_out * self.down / self.up

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed ``x`` ``(n, C)`` and return every output sample that is now fully determined, ``(m, C)`` float32.

        Samples before the stream are taken equal to its first sample (no start-up step); from ``delay_s`` on,
        the output equals ``resample_poly`` of the whole stream.
        """
        x = np.asarray(x)  # any float dtype: the history stores float64
        shape = x.shape
        if len(shape) != 2 or shape[1] != self.n_channels:
            raise ValueError(f"expected a chunk of shape (n, {self.n_channels}), got {shape}")
        n = shape[0]
        if n == 0:
            return np.empty((0, self.n_channels), dtype=np.float32)
        if self.up == self.down:
            self.samples_in += n
            self.samples_out = self.samples_in
            return x.astype(np.float32)
        history = self._history
        if self.samples_in == 0:
            history.reset(fill=x[0])
        self.samples_in += n
        column = history.reserve(n)
        k = self.samples_out
        # last k with floor((k * down + half_len) / up) <= samples_in - 1
        self.samples_out = k_end = max(k, (self.samples_in * self.up - 1 - self.half_len) // self.down + 1)
        out = np.empty((k_end - k, self.n_channels), dtype=np.float32)
        # one compiled variant for every input: float64 C order, as the history stores it (float32 converts exactly)
        _polyphase(history.data, column, np.ascontiguousarray(x, dtype=np.float64), k, self._shift - history.start,
                   *self._phases, out)
        return out
