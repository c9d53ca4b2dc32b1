"""Stateful IIR filtering of ``(n, C)`` chunks, and the band-pass designs used by the edge.

Filters are second-order sections (SOS) with carried state ``zi``, so a stream filtered chunk by chunk gives
bit-identical output to the same stream filtered in one call. :class:`StreamingSOS` runs them in one compiled (numba)
call per chunk, :func:`_sosfilt`: the arithmetic of :func:`scipy.signal.sosfilt` (its C loop, transposed direct form
II, the same operations in the same order), so the output is scipy's to the bit, without scipy's ~40 µs of argument
checks and axis moves per call (measured on a 2 vCPU x86-64 box, 2026-12-02).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy.signal import butter, group_delay, sos2tf, sosfilt, sosfilt_zi


def qrs_bandpass(fs_hz: float, low_hz: float = 5.0, high_hz: float = 15.0, order: int = 2) -> np.ndarray:
    """Butterworth band-pass that keeps the QRS complex and drops P/T waves and baseline (for detection).

    Parameters
    ----------
    fs_hz
        Sampling rate (Hz).
    low_hz, high_hz
        Band edges (Hz).
    order
        Butterworth order per edge (the band-pass has ``2 * order`` poles).

    Returns
    -------
    numpy.ndarray
        SOS array, shape ``(order, 6)``.
    """
    return butter(order, [low_hz, high_hz], btype="bandpass", fs=fs_hz, output="sos")


def display_bandpass(fs_hz: float, low_hz: float = 0.5, high_hz: float = 40.0, order: int = 2) -> np.ndarray:
    """Butterworth band-pass for display and wave segmentation: removes baseline wander and mains/EMG noise.

    Same parameters and return value as :func:`qrs_bandpass`.
    """
    return butter(order, [low_hz, high_hz], btype="bandpass", fs=fs_hz, output="sos")


def five_point_derivative(fs_hz: float) -> np.ndarray:
    """FIR taps of the Pan–Tompkins five-point derivative, ``(2x[n] + x[n-1] - x[n-3] - 2x[n-4]) * fs / 8``.

    Applied with ``np.convolve`` it turns mV into mV/s (group delay 2 samples).
    """
    return np.array([2.0, 1.0, 0.0, -1.0, -2.0]) * (fs_hz / 8.0)


def impulse_response(sos: np.ndarray, tail_energy: float = 1e-6, max_taps: int = 4096) -> np.ndarray:
    """The impulse response of ``sos`` as FIR taps, cut where the energy left is below ``tail_energy`` of the total.

    Used to run a causal IIR design as an FIR (same phase, a fixed number of taps, no recursive state).
    """
    impulse = np.zeros(max_taps)
    impulse[0] = 1.0
    h = sosfilt(sos, impulse)
    cumulative = np.cumsum(h * h)
    n_taps = int(np.searchsorted(cumulative, (1.0 - tail_energy) * cumulative[-1])) + 1
    return h[:n_taps]


def group_delay_samples(sos: np.ndarray, freq_hz: float, fs_hz: float) -> float:
    """Group delay (samples) of the filter ``sos`` at ``freq_hz``."""
    b, a = sos2tf(sos)
    _, delay = group_delay((b, a), w=[freq_hz], fs=fs_hz)
    return float(delay[0])


@numba.njit(cache=True)
def _sosfilt(sos: np.ndarray, x: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfilt(sos, x, axis=0, zi=zi)`` for float64 ``x`` ``(n, C)`` and ``zi`` ``(n_sections, 2,
    C)``: returns ``y`` ``(n, C)`` and updates ``zi`` in place, with scipy's operations in scipy's order."""
    n, n_channels = x.shape
    y = np.empty((n, n_channels))
    for c in range(n_channels):
        for i in range(n):
            x_cur = x[i, c]
            for s in range(sos.shape[0]):
                x_new = sos[s, 0] * x_cur + zi[s, 0, c]
                zi[s, 0, c] = sos[s, 1] * x_cur - sos[s, 4] * x_new + zi[s, 1, c]
                zi[s, 1, c] = sos[s, 2] * x_cur - sos[s, 5] * x_new
                x_cur = x_new
            y[i, c] = x_cur
    return y


class StreamingSOS:
    """An SOS filter applied column-wise to a stream of ``(n, C)`` chunks.

    The state starts at the steady state of the first sample pushed, so a stream that begins at a DC offset
    does not ring.

    Parameters
    ----------
    sos
        Second-order sections, shape ``(n_sections, 6)``.
    n_channels
        Number of columns of every chunk.
    """

    def __init__(self, sos: np.ndarray, n_channels: int):
        self.sos = np.ascontiguousarray(sos, dtype=np.float64)
        if not np.all(self.sos[:, 3] == 1.0):
            raise ValueError("SOS sections must be normalised (a0 == 1)")
        self.n_channels = int(n_channels)
        self._zi_unit = sosfilt_zi(self.sos)[:, :, None]  # steady state for a unit step, (n_sections, 2, 1)
        self.zi: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the state; the next push starts a new stream."""
        self.zi = None

    def push(self, x: np.ndarray) -> np.ndarray:
        """Filter ``x`` ``(n, C)`` (any float dtype) and return ``(n, C)`` float64."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] == 0:
            return x
        if self.zi is None:
            self.zi = np.ascontiguousarray(self._zi_unit * x[0])
        return _sosfilt(self.sos, x, self.zi)
