"""RR context of each heartbeat, the timing evidence a beat classifier needs (SVEB are told apart by prematurity).

One implementation for training and the edge: :func:`rr_features` for a whole beat series, :class:`RRContext` for a
live one. Both compute every value with the same float64 operations, so they agree exactly.

Per beat ``i`` with R times ``t`` (s, strictly increasing):

- ``pre_rr_s = t[i] - t[i-1]``; the first beat takes its post-RR (both :data:`DEFAULT_RR_S` for a lone beat);
- ``post_rr_s = t[i+1] - t[i]``; the last beat takes its pre-RR;
- ``local_rr_s``: mean RR of the last :data:`LOCAL_BEATS` intervals ending at beat ``i``, ``(t[i] - t[j]) / (i - j)``
  with ``j = max(0, i - LOCAL_BEATS)`` (the pre-RR for the first beat);
- ``long_rr_s``: mean RR of all intervals ending at beat ``i`` whose first beat is within :data:`LONG_WINDOW_S`
  before it, ``(t[i] - t[j]) / (i - j)`` with ``j`` the first beat with ``t[j] >= t[i] - LONG_WINDOW_S`` (all
  beats so far during the first 5 min; the pre-RR when no earlier beat is in the window);
- the ratios ``pre/local``, ``post/local``, ``pre/long`` and ``post/pre`` (dimensionless).

The streaming object needs the next beat for the post-RR: a beat's features come out **one beat late**, when the
following R peak is pushed (or at :meth:`RRContext.flush`).
"""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

#: Names of the feature columns, in order (units: ``_s`` seconds, the rest dimensionless ratios).
FEATURE_NAMES: tuple[str, ...] = (
    "pre_rr_s", "post_rr_s", "local_rr_s", "long_rr_s", "pre_over_local", "post_over_local", "pre_over_long",
    "post_over_pre",
)  # fmt: skip
#: Intervals averaged by the local mean RR (beats).
LOCAL_BEATS = 10
#: Span of the long mean RR (s).
LONG_WINDOW_S = 300.0
#: RR assumed for a lone beat with no neighbour (s).
DEFAULT_RR_S = 0.8


def _row(pre: float, post: float, local: float, long: float) -> np.ndarray:
    return np.array([pre, post, local, long, pre / local, post / local, pre / long, post / pre], dtype=np.float64)


def rr_features(r_times_s: np.ndarray) -> np.ndarray:
    """RR features of a whole beat series.

    Args:
        r_times_s: ``(n,)`` R-peak times (s), strictly increasing.

    Returns:
        ``(n, len(FEATURE_NAMES))`` float64, columns in :data:`FEATURE_NAMES` order.

    Raises:
        ValueError: the times are not a strictly increasing 1-D series.
    """
    t = np.asarray(r_times_s, dtype=np.float64)
    if t.ndim != 1 or (t.size > 1 and not np.all(np.diff(t) > 0)):
        raise ValueError("R times must be a strictly increasing 1-D series (s)")
    n = t.size
    if n == 0:
        return np.empty((0, len(FEATURE_NAMES)))
    if n == 1:
        return _row(DEFAULT_RR_S, DEFAULT_RR_S, DEFAULT_RR_S, DEFAULT_RR_S)[None]
    rr = t[1:] - t[:-1]
    pre = np.concatenate([rr[:1], rr])
    post = np.concatenate([rr, rr[-1:]])
    i = np.arange(n)
    j_local = np.maximum(0, i - LOCAL_BEATS)
    j_long = np.searchsorted(t, t - LONG_WINDOW_S, side="left")
    with np.errstate(divide="ignore", invalid="ignore"):
        local = np.where(i > j_local, (t - t[j_local]) / (i - j_local), pre)
        long = np.where(i > j_long, (t - t[j_long]) / (i - j_long), pre)
    return np.stack([pre, post, local, long, pre / local, post / local, pre / long, post / pre], axis=1)


class RRContext:
    """Streaming RR features: push R times one by one, get each beat's features one beat late.

    State: ``times``, the R times (s) still needed (the last :data:`LOCAL_BEATS` + 1 and those within
    :data:`LONG_WINDOW_S` of the pending beat), ``first``, the series index of ``times[0]``, and ``count``, the beats
    pushed since the last reset.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every beat; the next push starts a new series."""
        self.times: list[float] = []
        self.first = 0
        self.count = 0

    def push(self, r_time_s: float) -> np.ndarray | None:
        """Add the next R peak (s, later than the previous one).

        Returns:
            ``(len(FEATURE_NAMES),)`` float64 features of the **previous** beat, now that its post-RR is known;
            None on the first push.

        Raises:
            ValueError: the time is not later than the previous R peak.
        """
        t = float(r_time_s)
        if self.times and not t > self.times[-1]:
            raise ValueError(f"R time {t} s is not after the previous one ({self.times[-1]} s)")
        self.times.append(t)
        self.count += 1
        if self.count == 1:
            return None
        return self._features(self.count - 2, post=t - self.times[-2])

    def flush(self) -> np.ndarray | None:
        """End of the series: the features of the last beat (post-RR = its pre-RR), or None without beats; then
        :meth:`reset`."""
        if self.count == 0:
            return None
        out = self._features(self.count - 1, post=None)
        self.reset()
        return out

    def _time(self, index: int) -> float:
        return self.times[index - self.first]

    def _features(self, i: int, post: float | None) -> np.ndarray:
        """Features of beat ``i`` (series index); ``post`` None: the last beat of the series."""
        if i == 0:
            pre = DEFAULT_RR_S if post is None else post
            return _row(pre, pre, pre, pre)
        t_i = self._time(i)
        pre = t_i - self._time(i - 1)
        post = pre if post is None else post
        j_local = max(0, i - LOCAL_BEATS)
        local = (t_i - self._time(j_local)) / (i - j_local)
        j_long = self.first + bisect_left(self.times, t_i - LONG_WINDOW_S)
        long = (t_i - self._time(j_long)) / (i - j_long) if i > j_long else pre
        # times no later beat needs: before both windows of beat i (later beats' windows start later)
        drop = min(j_local, j_long) - self.first
        if drop > 0:
            del self.times[:drop]
            self.first += drop
        return _row(pre, post, local, long)
