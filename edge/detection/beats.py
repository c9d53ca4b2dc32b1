"""The beat chain used everywhere: device-rate chunks -> internal rate -> online QRS detection -> beats.

The edge's live path, ``beatssl-edge detect`` and training's R peaks all run :class:`BeatStream`;
:func:`detect_record` is the same stream fed from a whole record.

Once the detector has learned its levels, a chunk is resampled and its slope energy and candidates computed in one
compiled call, :func:`_resample_and_scan` (the resampler's and the detector's kernels back to back, their histories
kept in place), instead of one call per stage with the Python between them: the same arithmetic, so the same
beats, at a fraction of the per-chunk cost (bench/detector_speed.py). numba's on-disk cache keys a kernel on its own
file only: after editing a kernel it calls (``edge.dsp.resample``, ``edge.dsp.history``, ``edge.detection.qrs``),
delete ``edge/detection/__pycache__`` or the cached fused kernel keeps the old code (tests/test_detector.py, fused
against stage by stage, fails when that happens).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from edge.detection.qrs import OnlineQRSDetector, Peak, _push
from edge.dsp.history import reserve_columns
from edge.dsp.resample import StreamingResampler, _polyphase
from edge.ecg import INTERNAL_FS_HZ

#: Elements of the fused kernel's integer state (:meth:`BeatStream._prepare_fused`): constants, then each history's
#: ``[start, end]`` (shared with the history, :meth:`~edge.dsp.history.History.share_meta`), then the resampler's
#: phase table ``first``.
_RKEEP, _SHIFT, _UP, _DOWN, _XKEEP, _EKEEP, _HALF, _WINDOW, _DELAY, _NTAPS = range(10)
_RMETA, _XMETA, _EMETA, _FIRST = 10, 12, 14, 16
#: Chunk dtypes the fused kernel takes as they are (any other goes through the stages, which convert it).
_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)


@numba.njit(cache=True)
def _resample_and_scan(
    x: np.ndarray, k: int, lo: int, stop: int, out: np.ndarray, found: np.ndarray, ints: np.ndarray,
    floats: np.ndarray, rdata: np.ndarray, weights: np.ndarray, xdata: np.ndarray, edata: np.ndarray,
    scratch: np.ndarray,
) -> int:
    """One device chunk ``x`` ``(n, C)`` (float64 or float32, C order): :class:`~edge.dsp.resample.StreamingResampler`'s
    step (outputs ``k ..`` into ``out`` ``(m, C)`` float32, ``m >= 1``) then
    :class:`~edge.detection.qrs.OnlineQRSDetector`'s compiled step on ``out`` (candidates from ``lo``, its samples
    ending at detector index ``stop``, written to ``found``); returns the detector's candidate count.

    ``ints`` holds the integers named by ``_RKEEP ..`` (``_RMETA ..``: the three histories' ``[start, end]``),
    ``floats`` the detector's ``min_energy``, energy scale, slope taps (``ints[_NTAPS]`` of them) and reversed
    band-pass. The histories are compacted in place (:func:`edge.dsp.history.reserve_columns`; the caller checked
    that the chunk fits without growing any). Few, packed arguments: the call's own cost is per argument."""
    up = ints[_UP]
    column = reserve_columns(rdata, ints[_RMETA : _RMETA + 2], ints[_RKEEP], x.shape[0])
    _polyphase(rdata, column, x, k, ints[_SHIFT] - ints[_RMETA], up, ints[_DOWN], ints[_FIRST : _FIRST + up], weights,
               out)
    m = out.shape[0]
    reserve_columns(xdata, ints[_XMETA : _XMETA + 2], ints[_XKEEP], m)
    reserve_columns(edata, ints[_EMETA : _EMETA + 2], ints[_EKEEP], m)
    n_taps = ints[_NTAPS]
    return _push(out, xdata, edata, -ints[_XMETA], -ints[_EMETA], lo, stop, ints[_HALF], ints[_WINDOW], ints[_DELAY],
                 floats[0], floats[1], floats[2 : 2 + n_taps], floats[2 + n_taps :], scratch, found)


@dataclass(frozen=True)
class Beat:
    """One detected beat.

    Attributes:
        sample: R-peak index in the stream's own sampling (device fs), counted from the first sample pushed.
        time_s: ``sample / fs_hz`` (s, stream-relative; the edge adds the device t0).
        rr_s: RR interval to the previous beat (s), None for the first beat.
        hr_bpm: ``60 / rr_s`` (beats per minute), None for the first beat.
        latency_s: detection delay in stream time, ``(samples pushed when emitted - 1 - sample) / fs_hz`` (s).
        searchback: True when the beat was found by RR search-back (below the main threshold).
    """

    sample: int
    time_s: float
    rr_s: float | None
    hr_bpm: float | None
    latency_s: float
    searchback: bool = False


class BeatStream:
    """Resample a device stream to the internal rate and detect its beats online.

    Parameters
    ----------
    fs_hz
        Device sampling rate (Hz).
    n_leads
        Number of leads (columns) of every chunk.
    internal_fs_hz
        Rate the signal is resampled to before detection (Hz).

    Attributes
    ----------
    samples_in
        Device samples pushed so far.
    samples_internal
        Internal-rate samples produced so far (the resampler emits them :attr:`resampler`.``delay_s`` late).
    """

    def __init__(self, fs_hz: float, n_leads: int, internal_fs_hz: int = INTERNAL_FS_HZ):
        self.fs_hz = float(fs_hz)
        self.internal_fs_hz = int(internal_fs_hz)
        self.n_leads = int(n_leads)
        self.resampler = StreamingResampler(self.fs_hz, self.internal_fs_hz, self.n_leads)
        self.detector = OnlineQRSDetector(self.internal_fs_hz, self.n_leads)
        self._last_sample: int | None = None
        self._fused = 0  # the largest chunk (device samples) the fused kernel takes now; 0 while it does not apply
        self._fused_args: tuple = ()  # its arguments after the chunk's own (_prepare_fused)

    @property
    def samples_in(self) -> int:
        return self.resampler.samples_in

    @property
    def samples_internal(self) -> int:
        return self.resampler.samples_out

    def reset(self) -> None:
        """Start a new stream."""
        self.resampler.reset()
        self.detector.reset()
        self._last_sample = None
        self._fused = 0

    def push(self, chunk_mv: np.ndarray) -> tuple[np.ndarray, list[Beat]]:
        """Feed a chunk ``(n, n_leads)`` mV at ``fs_hz``.

        Returns
        -------
        internal, beats
            The chunk resampled to the internal rate, ``(m, n_leads)`` float32 (not band-passed; ``m`` may be 0),
            and the beats decided with this chunk, in time order.
        """
        x = np.asarray(chunk_mv)
        shape = x.shape
        dtype = x.dtype
        if (len(shape) == 2 and 0 < shape[0] <= self._fused and shape[1] == self.n_leads
                and (dtype is _F64 or dtype is _F32)):  # identity: native float64 / float32 (an `in` costs 0.3 µs)
            # the fused path: one compiled call (the same arithmetic as the stages' own pushes below), compiled for
            # C-ordered float32 and float64 chunks (edge.pipeline.warmup); a column slice of a record is copied
            if not x.flags.c_contiguous:
                x = np.ascontiguousarray(x)
            r, d = self.resampler, self.detector
            k = r.samples_out
            samples_in = r.samples_in + shape[0]
            k_end = (samples_in * r.up - 1 - r.half_len) // r.down + 1  # >= k once learned (it only grows)
            if k_end > k:
                r.samples_in, r.samples_out = samples_in, k_end
                out = np.empty((k_end - k, shape[1]), dtype=np.float32)
                lo, stop = d._next_eval, d.samples_in + k_end - k
                if stop - lo > d._room:
                    d._grow(stop - lo)
                    self._prepare_fused()
                count = _resample_and_scan(x, k, lo, stop, out, d._found, *self._fused_args)
                peaks = d.pushed(lo, stop, count)
                return out, self._to_beats(peaks) if peaks else []
        internal = self.resampler.push(x)
        peaks = self.detector.push(internal) if internal.shape[0] else []
        self._prepare_fused()
        return internal, self._to_beats(peaks) if peaks else []

    def _prepare_fused(self) -> None:
        """After a push through the stages (or a history grown): the largest chunk (device samples) the fused path
        takes without growing a history, and its kernel's arguments. The fused path waits until the detector has
        learned its levels (the first chunk and the learning period run the stages one by one), and does not apply
        without resampling."""
        r, d = self.resampler, self.detector
        if r.up == r.down or not d.learned:
            self._fused = 0
            return
        internal = min(d._x.room, d._energy.room) - 1  # outputs of a chunk of n inputs: at most n * up / down + 1
        self._fused = max(0, min(r._history.room, internal * r.down // r.up))
        half, window, delay, min_energy, scale, taps, band_reversed, scratch = d._constants
        rh, xs, e = r._history, d._x, d._energy
        ints = np.concatenate([[rh.keep, r._shift, r.up, r.down, xs.keep, e.keep, half, window, delay, taps.size],
                               np.zeros(6), r._first]).astype(np.int64)
        for history, at in ((rh, _RMETA), (xs, _XMETA), (e, _EMETA)):
            history.share_meta(ints[at : at + 2])
        floats = np.concatenate([[min_energy, scale], taps, band_reversed])
        self._fused_args = (ints, floats, rh.data, r._weights, xs.data, e.data, scratch)

    def flush(self) -> tuple[np.ndarray, list[Beat]]:
        """End of stream: the resampler's held-back tail (internal rate, as :meth:`push` returns it) and the beats
        still pending in the detector. Call :meth:`reset` before pushing a new stream."""
        internal = self.resampler.flush()
        peaks = self.detector.push(internal) if internal.shape[0] else []
        return internal, self._to_beats(peaks + self.detector.flush())

    def __repr__(self) -> str:
        return (f"BeatStream(fs_hz={self.fs_hz:g}, n_leads={self.n_leads}, samples_in={self.samples_in}, "
                f"samples_internal={self.samples_internal}, last_beat_sample={self._last_sample})")

    def _to_beats(self, peaks: list[Peak]) -> list[Beat]:
        beats = []
        now = self.samples_in - 1
        for peak in peaks:
            sample = min(now, round(self.resampler.output_time(peak.sample)))
            rr_s = None if self._last_sample is None else (sample - self._last_sample) / self.fs_hz
            beats.append(
                Beat(
                    sample=sample,
                    time_s=sample / self.fs_hz,
                    rr_s=rr_s,
                    hr_bpm=60.0 / rr_s if rr_s else None,
                    latency_s=(now - sample) / self.fs_hz,
                    searchback=peak.searchback,
                )
            )
            self._last_sample = sample
        return beats


def detect_record(signal_mv: np.ndarray, fs_hz: float, chunk_samples: int | None = None) -> list[Beat]:
    """Detect the beats of a whole record with the live code path.

    Parameters
    ----------
    signal_mv
        Samples in mV, ``(n_samples, n_leads)`` (a 1-D array is taken as one lead).
    fs_hz
        Sampling rate (Hz).
    chunk_samples
        Feed the record in chunks of this many samples (as a device would); None feeds it in one chunk.
        The beats are the same either way; only their ``latency_s`` differs.
    """
    signal = np.ascontiguousarray(signal_mv, dtype=np.float64)  # C order: its chunks go to the fused kernel as they are
    if signal.ndim == 1:
        signal = signal[:, None]
    stream = BeatStream(fs_hz, signal.shape[1])
    step = chunk_samples or max(1, signal.shape[0])
    beats: list[Beat] = []
    for i in range(0, signal.shape[0], step):
        beats.extend(stream.push(signal[i : i + step])[1])
    beats.extend(stream.flush()[1])
    return beats
