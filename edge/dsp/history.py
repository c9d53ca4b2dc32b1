"""Recent samples of a stream in a preallocated channel-major buffer, with a fixed sliding-window view.

Streaming stages append every chunk here instead of concatenating arrays, and read FIR windows through
:attr:`History.windows` (a view made once per allocation), which keeps the per-chunk cost to a few numpy calls.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class History:
    """The last samples of a ``C``-channel stream, stored as ``data[:, :end]`` (channel-major).

    Parameters
    ----------
    n_channels
        Number of channels ``C``.
    keep
        Samples that must stay readable before the newest one after each append.
    window
        Length (samples) of the windows of :attr:`windows`; ``windows[c, i]`` is ``data[c, i : i + window]``.
    fill
        Value of the samples before the stream (they count as history, at negative global indices).
    dtype
        Element type.

    Attributes
    ----------
    start
        Global index (samples since the stream began, counting the ``keep`` fill samples as negative) of column 0.
    end
        Number of valid columns.
    """

    def __init__(self, n_channels: int, keep: int, window: int = 1, fill: float = 0.0, dtype: type = np.float64):
        self.n_channels = int(n_channels)
        self.keep = max(int(keep), int(window))
        self.window = int(window)
        self.dtype = dtype
        self.reset(fill)

    def reset(self, fill: float | np.ndarray = 0.0) -> None:
        """Empty the history; the ``keep`` samples before the stream take the value ``fill`` (per channel)."""
        self._allocate(max(4096, 4 * self.keep))
        self.data[:, : self.keep] = np.reshape(fill, (-1, 1))
        self.end = self.keep
        self.start = -self.keep

    def _allocate(self, capacity: int) -> None:
        self.data = np.zeros((self.n_channels, capacity), dtype=self.dtype)
        self.windows = sliding_window_view(self.data, self.window, axis=1)

    @property
    def stop(self) -> int:
        """Global index one past the newest sample."""
        return self.start + self.end

    def append(self, x: np.ndarray) -> None:
        """Append ``x`` of shape ``(C, n)``, dropping samples older than ``keep`` before the newest when needed."""
        column = self.reserve(x.shape[1])
        self.data[:, column : self.end] = x

    def reserve(self, n: int) -> int:
        """Append ``n`` samples to be written in place (``data[:, column : end]``) and return their first column."""
        if self.end + n > self.data.shape[1]:
            tail = self.data[:, self.end - self.keep : self.end].copy()
            if self.keep + n > self.data.shape[1]:
                self._allocate(2 * (self.keep + n))
            self.data[:, : self.keep] = tail
            self.start += self.end - self.keep
            self.end = self.keep
        self.end += n
        return self.end - n

    def column(self, index: int) -> int:
        """Column of ``data`` that holds global sample ``index``."""
        return index - self.start
