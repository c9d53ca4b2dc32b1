"""A tolerant model of one device's clock: is a chunk's ``t0`` where its sample count says, or did time jump?

Real devices stamp chunks with a jittery clock (tens of ms) that drifts against their sampling clock. Comparing each
``t0`` with the first chunk's, as a fixed 20 ms rule does, turns that jitter into a detector restart on almost every
chunk. :class:`DeviceClock` predicts each ``t0`` from the samples counted since the run began plus a slowly tracked
offset (drift), estimates the jitter of the residual, and calls a *jump* only when a ``t0`` lies further from the
prediction than ``max(min_tolerance_s, jitter_factor × jitter)``. Pure logic, device-clock seconds throughout.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DeviceClock:
    """``push(t0_s, n_samples) -> jump_s | None`` for each chunk in order; ``reset()`` after a jump or a gap.

    Args:
        fs_hz: the stream's sampling rate (Hz).
        min_tolerance_s: smallest residual called a jump (s).
        jitter_factor: a residual beyond this many jitter estimates is a jump.
        alpha: weight of each chunk in the running offset and jitter estimates.

    State (printable): ``origin_s`` (device time of the run's first sample), ``samples`` (samples counted since),
    ``offset_s`` (tracked mean residual: drift so far), ``jitter_s`` (mean absolute residual about it).
    """

    fs_hz: float
    min_tolerance_s: float = 0.1
    jitter_factor: float = 6.0
    alpha: float = 0.05
    origin_s: float | None = None
    samples: int = 0
    offset_s: float = 0.0
    jitter_s: float = 0.0

    @property
    def tolerance_s(self) -> float:
        """The residual (s) beyond which a ``t0`` is a jump."""
        return max(self.min_tolerance_s, self.jitter_factor * self.jitter_s)

    @property
    def drift_ppm(self) -> float:
        """Tracked offset per elapsed sampling time, in parts per million (0 before a second has elapsed)."""
        elapsed = self.samples / self.fs_hz
        return self.offset_s / elapsed * 1e6 if elapsed >= 1.0 else 0.0

    def push(self, t0_s: float, n_samples: int) -> float | None:
        """Take the next chunk's ``t0`` (s) and length; return the jump (s, signed) when time jumped, else None.

        After a jump the state is unchanged: the caller restarts its run and calls :meth:`reset` then
        :meth:`push` again with the same chunk.
        """
        if self.origin_s is None:
            self.origin_s = t0_s
            self.samples = n_samples
            return None
        residual = t0_s - (self.origin_s + self.samples / self.fs_hz + self.offset_s)
        if abs(residual) > self.tolerance_s:
            return residual
        self.offset_s += self.alpha * residual
        self.jitter_s += self.alpha * (abs(residual - self.offset_s) - self.jitter_s)
        self.samples += n_samples
        return None

    def reset(self) -> None:
        """Start a new run: the next ``t0`` becomes the origin (the jitter estimate is kept: it is the device's)."""
        self.origin_s = None
        self.samples = 0
        self.offset_s = 0.0
