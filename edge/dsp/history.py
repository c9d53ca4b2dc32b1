"""Recent samples of a stream in a preallocated channel-major buffer.

Streaming stages reserve the columns of every chunk here (:meth:`History.reserve`) and their compiled kernels write
the chunk and read FIR windows in place, instead of concatenating arrays.
"""

from __future__ import annotations

import numpy as np


class History:
    """The last samples of a ``C``-channel stream, stored as ``data[:, :end]`` (channel-major, C-contiguous).

    Parameters
    ----------
    n_channels
        Number of channels ``C``.
    keep
        Samples that must stay readable before the newest one after each append.
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

    def __init__(self, n_channels: int, keep: int, fill: float = 0.0, dtype: type = np.float64):
        self.n_channels = int(n_channels)
        self.keep = max(1, int(keep))
        self.dtype = dtype
        self.reset(fill)

    def reset(self, fill: float | np.ndarray = 0.0) -> None:
        """Empty the history; the ``keep`` samples before the stream take the value ``fill`` (per channel)."""
        self.data = np.zeros((self.n_channels, max(4096, 4 * self.keep)), dtype=self.dtype)
        self.data[:, : self.keep] = np.reshape(fill, (-1, 1))
        self.end = self.keep
        self.start = -self.keep

    @property
    def stop(self) -> int:
        """Global index one past the newest sample."""
        return self.start + self.end

    def reserve(self, n: int) -> int:
        """Append ``n`` samples to be written in place (``data[:, column : end]``) and return their first column;
        samples older than ``keep`` before the newest are dropped when the buffer is full (``data`` may then be a
        new array: read it after this call)."""
        end = self.end + n
        if end > self.data.shape[1]:
            tail = self.data[:, self.end - self.keep : self.end].copy()
            if self.keep + n > self.data.shape[1]:
                self.data = np.zeros((self.n_channels, 2 * (self.keep + n)), dtype=self.dtype)
            self.data[:, : self.keep] = tail
            self.start += self.end - self.keep
            end = self.keep + n
        self.end = end
        return end - n

    def column(self, index: int) -> int:
        """Column of ``data`` that holds global sample ``index``."""
        return index - self.start
