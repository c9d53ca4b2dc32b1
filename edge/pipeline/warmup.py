"""Compile the signal kernels before the first patient's chunk, not on it.

The resampler, the beat detector, the pacing-spike finder and the band-pass are numba kernels (``cache=True``): the
first process after an install compiles them (about 10 s of CPU on a laptop core, 20 s or more on a small gateway),
every later one loads them from numba's on-disk cache (well under a second). Without this step that time fell on
the first chunk of the first device, which then waited, with every device queued behind it.

:func:`warm_up` streams a few seconds of a synthetic ECG (a QRS-like pulse train with pacing-like spikes, at a
Holter's 2 leads / 360 Hz and a 12-lead 500 Hz rate) through a :class:`~edge.pipeline.device.DeviceStream` without
engines and throws the result away. Pure: no I/O, nothing kept.
"""

from __future__ import annotations

import time

import numpy as np

from edge import protocol as proto
from edge.ecg import LEADS_12
from edge.pipeline.device import DeviceStream

#: the streams pushed: (sampling rate Hz, leads)
WARM_UP_STREAMS: tuple[tuple[float, tuple[str, ...]], ...] = ((360.0, ("MLII", "V5")), (500.0, LEADS_12))
#: seconds of synthetic signal per stream, in chunks of ``WARM_UP_CHUNK_S`` (s)
WARM_UP_S = 4.0
WARM_UP_CHUNK_S = 0.5


def synthetic_ecg(fs_hz: float, n_leads: int, seconds: float) -> np.ndarray:
    """``(n, n_leads)`` float32 mV: 1 mV Gaussian pulses (20 ms wide) at 75 bpm on a 0.3 Hz wander, with a 0.5 ms
    2 mV spike 150 ms before every other pulse (the pacing path), the same on every lead."""
    t = np.arange(int(round(seconds * fs_hz))) / fs_hz
    x = 0.1 * np.sin(2 * np.pi * 0.3 * t)
    for k, r in enumerate(np.arange(0.4, seconds, 0.8)):
        x += np.exp(-0.5 * ((t - r) / 0.01) ** 2)
        if k % 2:
            x[np.abs(t - (r - 0.15)) < 0.5e-3] += 2.0
    return np.repeat(x[:, None], n_leads, axis=1).astype(np.float32)


def warm_up() -> float:
    """Stream the synthetic ECG through a device stream (see the module docstring); returns the seconds it took."""
    start = time.perf_counter()
    for fs_hz, leads in WARM_UP_STREAMS:
        signal = synthetic_ecg(fs_hz, len(leads), WARM_UP_S)
        stream = DeviceStream("warm-up")
        step = int(round(WARM_UP_CHUNK_S * fs_hz))
        for seq, i in enumerate(range(0, len(signal), step)):
            chunk = signal[i : i + step]  # float32 and float64 in turn: the fused beat kernel's two variants
            stream.push(proto.SamplesMessage(seq, fs_hz, leads, i / fs_hz, chunk if seq % 2 else chunk.astype(float)))
        stream.flush()
    return time.perf_counter() - start
