"""``beatssl-edge detect``: the whole edge pipeline offline on a WFDB record, as a scorable JSON document.

The pipeline is :func:`edge.pipeline.runner.run_recording`, i.e. the same :class:`~edge.pipeline.device.DeviceStream`
(detector, engines, episodes, alarms) that ``run`` feeds from MQTT; only the engines answer each window at once
instead of in cross-device batches. The document (schema in docs/protocol.md, "detect --json"):

* ``beats``: every beat message, ``sample`` being the index in the record's own sampling (the record is fed with
  ``t0 = 0``, and the edge numbers samples on the device clock), ``time`` in s from the first sample, ``class``;
* ``episodes``: ``[{type, start, end}]`` (s from the first sample) with MIT-BIH rhythm codes (``AFIB``, ``B``,
  ``VT`` …, ``N`` for the stretches with no other episode);
* ``rhythm`` and ``alarms``: the rhythm and alarm messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edge.inference import Engine
from edge.pipeline.device_inference import InferencePlan
from edge.pipeline.runner import episodes_table, run_recording
from offline.records import read_record


def with_sinus(episodes: list[dict[str, Any]], duration_s: float) -> list[dict[str, Any]]:
    """The episode table plus ``N`` for every stretch of ``[0, duration_s]`` no other episode covers."""
    out, covered_to = [], 0.0
    for ep in sorted(episodes, key=lambda e: e["start"]):
        if ep["start"] > covered_to:
            out.append({"type": "N", "start": round(covered_to, 3), "end": ep["start"]})
        covered_to = max(covered_to, ep["end"])
    if covered_to < duration_s:
        out.append({"type": "N", "start": round(covered_to, 3), "end": round(duration_s, 3)})
    return sorted(out + list(episodes), key=lambda e: (e["start"], e["type"]))


def detect_record_file(
    record: str | Path,
    engines: Mapping[str, Engine],
    plan: InferencePlan | None,
    leads: Sequence[str] | None = None,
    chunk_s: float = 0.04,
) -> dict[str, Any]:
    """Read a WFDB record and run the edge pipeline on it; the ``detect --json`` document (see the module doc).

    Raises:
        offline.records.RecordError: the record cannot be read.
    """
    rec = read_record(record, leads=leads)
    out = run_recording(rec.signal_mv, rec.fs_hz, rec.leads, engines, plan, device=rec.name, chunk_s=chunk_s)
    duration = len(rec.signal_mv) / rec.fs_hz
    beats = [{k: v for k, v in b.items() if k not in ("v", "device", "proc_ms")} for b in out.get("beats", [])]
    return {
        "record": rec.name,
        "fs": rec.fs_hz,
        "leads": list(rec.leads),
        "duration_s": round(duration, 3),
        "engines": {task: e.manifest.name for task, e in engines.items()},
        "beats": beats,
        "episodes": with_sinus(episodes_table(out.get("episodes", []), duration), duration),
        "rhythm": out.get("rhythm", []),
        "alarms": out.get("alarms", []),
    }
