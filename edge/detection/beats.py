"""The beat chain used everywhere: device-rate chunks -> internal rate -> online QRS detection -> beats.

The edge's live path, ``beatssl-edge detect`` and training's R peaks all run :class:`BeatStream`;
:func:`detect_record` is the same stream fed from a whole record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.detection.qrs import OnlineQRSDetector, Peak
from edge.dsp.resample import StreamingResampler
from edge.ecg import INTERNAL_FS_HZ


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

    def push(self, chunk_mv: np.ndarray) -> tuple[np.ndarray, list[Beat]]:
        """Feed a chunk ``(n, n_leads)`` mV at ``fs_hz``.

        Returns
        -------
        internal, beats
            The chunk resampled to the internal rate, ``(m, n_leads)`` float32 (not band-passed; ``m`` may be 0),
            and the beats decided with this chunk, in time order.
        """
        internal = self.resampler.push(chunk_mv)
        peaks = self.detector.push(internal) if internal.shape[0] else []
        return internal, self._to_beats(peaks) if peaks else []

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
    signal = np.asarray(signal_mv, dtype=np.float64)
    if signal.ndim == 1:
        signal = signal[:, None]
    stream = BeatStream(fs_hz, signal.shape[1])
    step = chunk_samples or max(1, signal.shape[0])
    beats: list[Beat] = []
    for i in range(0, signal.shape[0], step):
        beats.extend(stream.push(signal[i : i + step])[1])
    beats.extend(stream.flush()[1])
    return beats
