"""The live pipeline run synchronously on a whole recording: the same :class:`~edge.pipeline.device.DeviceStream`
that ``beatssl-edge run`` feeds from MQTT, fed here chunk by chunk with every engine request answered at once
(batches of one instead of batches across devices; the outputs are the same).

This is what ``beatssl-edge detect RECORD`` runs, so any tool can score the edge offline: the beats (with waves and
classes), rhythm messages, episodes and alarms it returns are the messages ``run`` would publish.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping

import numpy as np

from edge.inference import Engine
from edge.inference.batching import InferenceRequest
from edge.interpret.alarms import AlarmLimits
from edge.pipeline.device import DeviceStream, StreamConfig
from edge.pipeline.device_inference import REQUEST_TASK, InferencePlan
from edge.pipeline.outputs import Output
from edge.protocol import SamplesMessage


def answer(request: InferenceRequest, engine: Engine) -> np.ndarray | None:
    """Run one request through its engine; its output row, or None when the engine fails (as a failed batch)."""
    try:
        window = request.window[None].astype(np.float32, copy=False)
        if request.features is not None:
            return engine.infer(window, request.features[None].astype(np.float32, copy=False))[0]
        return engine.infer(window)[0]
    except Exception:  # noqa: BLE001 - as in the live scheduler: a failed window is answered with no result
        return None


def run_recording(
    signal_mv: np.ndarray,
    fs_hz: float,
    leads: tuple[str, ...],
    engines: Mapping[str, Engine],
    plan: InferencePlan | None,
    device: str = "offline",
    chunk_s: float = 0.04,
    t0_s: float = 0.0,
    alarm_limits: AlarmLimits | None = None,
) -> dict[str, list[dict]]:
    """Feed a recording through one device stream as a device would and collect what it publishes.

    Args:
        signal_mv: ``(n, L)`` samples in mV at ``fs_hz`` (Hz); leads: their canonical names.
        engines: loaded engines by task (``segment``, ``classify``, ``beat-classify``); plan: the inference plan
            built from them (None: beats and beat-based rhythm only).
        chunk_s: chunk length (s) fed at a time; t0_s: device time of the first sample (s).

    Returns:
        The published messages by kind: ``beats``, ``rhythm``, ``episodes``, ``alarms``, ``status``, ``errors``.
    """
    stream = DeviceStream(device, StreamConfig(), plan, alarm_limits)
    out: dict[str, list[dict]] = defaultdict(list)
    step = max(1, int(round(chunk_s * fs_hz)))
    signal = np.asarray(signal_mv, dtype=np.float32)

    def collect(outputs: list[Output]) -> None:
        pending = list(outputs)
        while pending:
            for o in pending:
                out[o.kind].append(o.payload)
            pending = []
            for request in stream.take_requests():
                engine = engines.get(REQUEST_TASK[request.kind])
                pending += stream.on_result(request, None if engine is None else answer(request, engine))

    for i, start in enumerate(range(0, signal.shape[0], step)):
        chunk = signal[start:start + step]
        collect(stream.push(SamplesMessage(i, fs_hz, leads, t0_s + start / fs_hz, chunk)))
    collect(stream.flush())
    return dict(out)


def episodes_table(episodes: list[dict], end_s: float) -> list[dict[str, float | str]]:
    """Closed episodes ``{type, start, end}`` (s) from the episode messages; one still open ends at ``end_s``."""
    table, open_ = [], {}
    for msg in episodes:
        if msg["state"] == "start":
            open_[msg["type"]] = msg["start"]
        elif msg["state"] == "end":
            open_.pop(msg["type"], None)
            table.append({"type": msg["type"], "start": msg["start"], "end": msg["end"]})
    table += [{"type": t, "start": s, "end": end_s} for t, s in open_.items() if math.isfinite(s)]
    return sorted(table, key=lambda e: (e["start"], e["type"]))
