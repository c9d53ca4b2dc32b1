"""During atrial fibrillation an early beat is irregular conduction, not a supraventricular ectopic beat: the edge
publishes (and counts) the beats its classifier calls S as N while an AFIB episode is on, and opens no SVTA episode
from them. MIT-BIH 201 (DS1), whose first 378 s are atrial fibrillation, through the whole pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.app import EdgeConfig, load_plan
from edge.pipeline.runner import episodes_table, run_recording
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.records import read_record

ENGINES = tuple(sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "engines").glob("*/manifest.json")))
DURATION_S = 240.0


@pytest.fixture(scope="module")
def af_201(data_dir) -> dict[str, list[dict]]:
    plan, engines = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=ENGINES))
    if "beat-classify" not in engines:
        pytest.skip("no beat-classify engine in engines/")
    rec = read_record(data_dir / "mitdb" / "201")
    n = int(DURATION_S * rec.fs_hz)
    return run_recording(rec.signal_mv[:n], rec.fs_hz, rec.leads, engines, plan)


def test_beats_the_classifier_calls_s_during_af_are_published_as_n(af_201) -> None:
    afib = [e for e in af_201["episodes"] if e["type"] == "AFIB" and e["state"] == "start"]
    assert afib, "201's atrial fibrillation is found"
    decided_s = afib[0]["at"]  # the episode is on from the moment it is decided
    in_af = [b for b in af_201["beats"] if b["time"] > decided_s + 1.0 and b.get("class_probs")]
    assert len(in_af) > 150
    called_s = [b for b in in_af if max(b["class_probs"], key=b["class_probs"].get) == "S"]
    assert len(called_s) >= 20  # the classifier calls many irregular AF beats S ...
    assert all(b["class"] == "N" for b in called_s)  # ... and the monitor publishes them as N
    assert not [b for b in in_af if b["class"] == "S"]
    episodes = episodes_table(af_201["episodes"], DURATION_S)
    assert not [e for e in episodes if e["type"] == "SVTA" and e["start"] > decided_s]


def test_pac_count_during_af_is_zero(af_201) -> None:
    afib = next(e for e in af_201["episodes"] if e["type"] == "AFIB" and e["state"] == "start")
    late = [m for m in af_201["rhythm"] if m["t_end"] > afib["at"] + 61.0]
    assert late and all(m["pac_per_min"] == 0 for m in late)
