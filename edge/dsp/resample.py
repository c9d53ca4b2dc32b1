"""Streaming rational-ratio polyphase FIR resampler with explicit state.

The filter is the one :func:`scipy.signal.resample_poly` designs by default (Kaiser window, beta 5, half length
``10 * max(up, down)`` taps at the upsampled rate), and output sample ``k`` is aligned exactly like
``resample_poly``'s: it estimates the input at time ``k * down / up`` input samples. The output therefore has
**no index shift** to compensate; it is simply emitted late: output ``k`` needs input samples up to
``floor((k * down + half_len) / up)``, i.e. :attr:`StreamingResampler.delay_s` of look-ahead (10 output samples,
40 ms at 250 Hz out). Samples before the first pushed one are taken as zero, as ``resample_poly`` does.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import firwin

#: Largest up/down factor accepted when approximating a non-rational rate ratio.
MAX_FACTOR = 1000


class StreamingResampler:
    """Resample ``(n, C)`` chunks from ``fs_in_hz`` to ``fs_out_hz`` (ratio ``up / down`` in lowest terms).

    Parameters
    ----------
    fs_in_hz, fs_out_hz
        Input and output sampling rates (Hz). Their ratio is approximated by a fraction with terms
        ``<= MAX_FACTOR``; the effective output rate is ``fs_in_hz * up / down``.
    n_channels
        Number of columns of every chunk.

    Notes
    -----
    Each output is a fixed-order sum over the same input samples whatever the chunking, so the output stream
    does not depend on how the input is split.
    """

    def __init__(self, fs_in_hz: float, fs_out_hz: float, n_channels: int):
        if fs_in_hz <= 0 or fs_out_hz <= 0 or n_channels < 1:
            raise ValueError("sampling rates must be positive and n_channels >= 1")
        ratio = Fraction(fs_out_hz / fs_in_hz).limit_denominator(MAX_FACTOR)
        self.fs_in_hz = float(fs_in_hz)
        self.fs_out_hz = float(fs_out_hz)
        self.n_channels = int(n_channels)
        self.up = ratio.numerator
        self.down = ratio.denominator
        if self.up == self.down:
            self.half_len = 0
            self._bank = np.ones((1, 1))
        else:
            self.half_len = 10 * max(self.up, self.down)
            h = firwin(2 * self.half_len + 1, 1.0 / max(self.up, self.down), window=("kaiser", 5.0)) * self.up
            n_taps = -(-h.size // self.up)
            padded = np.zeros(n_taps * self.up)
            padded[: h.size] = h
            # bank[p, j] = h[p + (n_taps - 1 - j) * up]: taps of phase p, applied to x[n_hi - n_taps + 1 + j]
            self._bank = padded.reshape(n_taps, self.up).T[:, ::-1].copy()
        self.reset()

    @property
    def delay_s(self) -> float:
        """Look-ahead (s): how long after its nominal time an output sample can be emitted."""
        return self.half_len / (self.up * self.fs_in_hz)

    def reset(self) -> None:
        """Forget all input; the next push starts a new stream at sample 0."""
        self.samples_in = 0
        self.samples_out = 0
        # channel-major history of input samples x[samples_in - n : samples_in]; zeros before the stream
        self._buffer = np.zeros((self.n_channels, self._bank.shape[1]))

    def output_time(self, k_out: float) -> float:
        """Input-sample time (in input samples, fractional) that output sample ``k_out`` represents."""
        return k_out * self.down / self.up

    def push(self, x: np.ndarray) -> np.ndarray:
        """Feed ``x`` ``(n, C)`` and return every output sample that is now fully determined, ``(m, C)`` float32."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise ValueError(f"expected a chunk of shape (n, {self.n_channels}), got {x.shape}")
        if self.up == self.down:
            self.samples_in += x.shape[0]
            self.samples_out += x.shape[0]
            return x.astype(np.float32)
        n_taps = self._bank.shape[1]
        self._buffer = np.concatenate((self._buffer, x.T), axis=1)
        self.samples_in += x.shape[0]
        # last k with floor((k * down + half_len) / up) <= samples_in - 1
        k_end = max(0, (self.samples_in * self.up - 1 - self.half_len) // self.down + 1)
        if k_end == self.samples_out:
            return np.empty((0, self.n_channels), dtype=np.float32)
        start = self.samples_in - self._buffer.shape[1]
        t = np.arange(self.samples_out, k_end) * self.down + self.half_len
        first = t // self.up - n_taps + 1 - start  # buffer column of each output's oldest input sample
        windows = sliding_window_view(self._buffer, n_taps, axis=1)  # (C, columns, n_taps), a view
        out = np.empty((t.size, self.n_channels), dtype=np.float32)
        block = 8192  # outputs per gather, bounds the memory used by one-chunk records
        for b in range(0, t.size, block):
            gathered = windows[:, first[b : b + block]]  # (C, K, n_taps)
            out[b : b + block] = (gathered * self._bank[t[b : b + block] % self.up]).sum(axis=2).T
        self.samples_out = k_end
        keep_from = (k_end * self.down + self.half_len) // self.up - n_taps + 1
        self._buffer = self._buffer[:, max(0, keep_from - start) :]
        return out
