"""Recent samples of a stream in a preallocated channel-major buffer.

Streaming stages reserve the columns of every chunk here (:meth:`History.reserve`, or :func:`reserve_columns` from a
compiled kernel) and their compiled kernels write the chunk and read FIR windows in place, instead of concatenating
arrays.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def reserve_columns(data: np.ndarray, meta: np.ndarray, keep: int, n: int) -> int:
    """:meth:`History.reserve` inside a compiled kernel, for ``n <= data.shape[1] - keep`` (the caller's check: the
    buffer never has to grow): when the buffer is full, its newest ``keep`` columns move to the front in place.
    ``meta`` is the history's ``[start, end]``; returns the first column of the ``n`` new samples."""
    start, end = meta[0], meta[1]
    if end + n > data.shape[1]:
        src = end - keep
        for c in range(data.shape[0]):
            for j in range(keep):  # the source lies after the destination: a forward copy is safe
                data[c, j] = data[c, src + j]
        start += src
        end = keep
    meta[0] = start
    meta[1] = end + n
    return end


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
        #: ``[start, end]`` (int64), shared with compiled kernels (:func:`reserve_columns`, :meth:`share_meta`)
        self.meta = np.empty(2, dtype=np.int64)
        self.reset(fill)

    def reset(self, fill: float | np.ndarray = 0.0) -> None:
        """Empty the history; the ``keep`` samples before the stream take the value ``fill`` (per channel)."""
        self.data = np.zeros((self.n_channels, max(4096, 4 * self.keep)), dtype=self.dtype)
        self.data[:, : self.keep] = np.reshape(fill, (-1, 1))
        self.meta[0], self.meta[1] = -self.keep, self.keep

    def share_meta(self, view: np.ndarray) -> None:
        """Keep ``[start, end]`` in ``view`` from now on: two int64 elements of a larger array, so that one kernel
        argument carries the bookkeeping of several histories. The current values move there."""
        view[:] = self.meta
        self.meta = view

    @property
    def start(self) -> int:
        return int(self.meta[0])

    @property
    def end(self) -> int:
        return int(self.meta[1])

    @property
    def room(self) -> int:
        """The most samples one :func:`reserve_columns` call may append (the buffer's columns beyond ``keep``)."""
        return self.data.shape[1] - self.keep

    @property
    def stop(self) -> int:
        """Global index one past the newest sample."""
        return self.start + self.end

    def reserve(self, n: int) -> int:
        """Append ``n`` samples to be written in place (``data[:, column : end]``) and return their first column;
        samples older than ``keep`` before the newest are dropped when the buffer is full (``data`` may then be a
        new array: read it after this call)."""
        if n > self.room:
            end = int(self.meta[1])
            tail = self.data[:, end - self.keep : end].copy()
            self.data = np.zeros((self.n_channels, 2 * (self.keep + n)), dtype=self.dtype)
            self.data[:, : self.keep] = tail
            self.meta[0] += end - self.keep
            self.meta[1] = self.keep
        return reserve_columns(self.data, self.meta, self.keep, n)

    def column(self, index: int) -> int:
        """Column of ``data`` that holds global sample ``index``."""
        return index - self.start
