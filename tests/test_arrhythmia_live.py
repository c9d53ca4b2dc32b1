"""Beat classes, episodes and alarms live over a real mosquitto equal the offline pipeline (``detect``) on the same
signal: MIT-BIH 119 (ventricular bigeminy) and 201 (atrial fibrillation), replayed by the simulator at full speed
through an edge with the shipped engines."""

from __future__ import annotations

from pathlib import Path

import pytest
from edge_harness import Collector, running_edge

from edge import protocol as proto
from edge.app import EdgeConfig, load_plan
from edge.pipeline.runner import episodes_table, run_recording
from edge.transport.mqtt import BrokerAddress, MqttSettings
from offline.records import read_record
from simulator.replay import Replayer
from simulator.sources import wfdb_records

ENGINES = tuple(sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "engines").glob("*/manifest.json")))
DURATION_S = 240.0


@pytest.fixture(scope="module")
def offline(data_dir):
    """The offline pipeline's answer on the first DURATION_S of each record."""
    plan, engines = load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=ENGINES))
    if "beat-classify" not in engines:
        pytest.skip("no beat-classify engine in engines/")
    out = {}
    for name in ("119", "201"):
        rec = read_record(data_dir / "mitdb" / name)
        n = int(DURATION_S * rec.fs_hz)
        out[name] = run_recording(rec.signal_mv[:n], rec.fs_hz, rec.leads, engines, plan)
    return out


def test_live_classes_and_episodes_equal_detect(broker, data_dir, offline) -> None:
    with running_edge(broker, engines=ENGINES, stale_after_s=2.0) as (edge, settings):
        col = Collector(settings)
        replayer = Replayer(wfdb_records(data_dir / "mitdb", names=["119", "201"]), settings, devices=2,
                            speed=float("inf"), chunk_ms=40, device_prefix="arr")
        replayer.run(duration_s=DURATION_S)
        devices = dict(zip(("119", "201"), replayer.device_ids, strict=True))
        assert col.wait_for(lambda: all(any(m["state"] == "stale" for m in col.get(proto.status_topic(d)))
                                        for d in devices.values()), 90)
        assert col.wait_for(lambda: all(len(col.get(proto.beats_topic(d))) >= len(offline[n]["beats"])
                                        for n, d in devices.items()), 30)
        for name, device in devices.items():
            live = col.get(proto.beats_topic(device))
            want = offline[name]["beats"]
            assert [(b["sample"], b["class"]) for b in live] == [(b["sample"], b["class"]) for b in want], name
            live_eps = episodes_table(col.get(proto.episodes_topic(device)), DURATION_S)
            want_eps = episodes_table(offline[name].get("episodes", []), DURATION_S)
            assert live_eps == want_eps, name
        bigeminy = [e for e in episodes_table(col.get(proto.episodes_topic(devices["119"])), DURATION_S)
                    if e["type"] == "B"]
        assert sum(e["end"] - e["start"] for e in bigeminy) > 40.0, "119's bigeminy is not there"
        af = [e for e in episodes_table(col.get(proto.episodes_topic(devices["201"])), DURATION_S)
              if e["type"] == "AFIB"]
        assert af, "201's atrial fibrillation is not there"
        v_beats = sum(b["class"] == "V" for b in col.get(proto.beats_topic(devices["119"])))
        assert v_beats > 50  # 119 holds 60 V beats (reference) in its first 240 s
        rhythm = col.get(proto.rhythm_topic(devices["119"]))
        assert any(m["rhythm"] == "B" for m in rhythm) and any(m["pvc_per_min"] > 5 for m in rhythm)
        col.close()
