"""End to end through a real mosquitto: simulator → edge → subscribers.

- The beats received over MQTT for MIT-BIH 100 replayed at --speed max equal `beatssl-edge detect` on the record.
- Two edge workers with --partition 0/2 and 1/2 share the devices: each device is handled by exactly one worker and
  no beat is lost or doubled.
"""

from __future__ import annotations

import json

import numpy as np
from edge_harness import Collector, running_edge
from typer.testing import CliRunner

from beatssl.cli import app as edge_cli
from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.detection.beats import detect_record
from edge.transport.mqtt import MqttSettings
from offline.records import read_record
from simulator.replay import Replayer
from simulator.sources import wfdb_records


def test_mqtt_beats_equal_offline_detect_on_mitdb_100(broker, data_dir) -> None:
    duration_s = 300.0
    out = CliRunner().invoke(edge_cli, ["detect", str(data_dir / "mitdb" / "100"), "--json"])
    assert out.exit_code == 0, out.output
    offline = json.loads(out.stdout)
    assert offline["fs"] == 360.0 and len(offline["beats"]) > 2200
    with running_edge(broker, engines=(), stale_after_s=2.0) as (edge, settings):
        col = Collector(settings)
        replayer = Replayer(wfdb_records(data_dir / "mitdb", names=["100"]), settings, devices=1,
                            speed=float("inf"), chunk_ms=40, device_prefix="mit")
        replayer.run(duration_s=duration_s)
        device = replayer.device_ids[0]
        # the device goes quiet: the edge flushes its detector, so the last beat comes out too
        assert col.wait_for(lambda: any(m["state"] == "stale" for m in col.get(proto.status_topic(device))), 20)
        live = col.get(proto.beats_topic(device))
        n = int(round(duration_s * 360.0))
        expected = [b.sample for b in detect_record(read_record(data_dir / "mitdb" / "100").signal_mv[:n], 360.0,
                                                    chunk_samples=int(0.04 * 360))]
        assert [m["sample"] for m in live] == expected
        # and the same as the CLI's answer over the whole record, for every beat before the cut
        cli_samples = [b["sample"] for b in offline["beats"] if b["sample"] < n - 360]
        assert [m["sample"] for m in live][: len(cli_samples)] == cli_samples
        assert [m["time"] for m in live][:3] == [b["time"] for b in offline["beats"]][:3]
        assert edge.devices()[device].counters.errors == {}
        col.close()


def test_two_partitioned_workers_share_devices_without_loss_or_duplicates(broker, data_dir) -> None:
    settings = MqttSettings(broker.address)
    workers = [EdgeApp(EdgeConfig(mqtt=settings, node=f"w{k}", partition=(k, 2), stale_after_s=2.0)).start()
               for k in range(2)]
    try:
        assert all(w.wait_connected(10) for w in workers)
        col = Collector(settings)
        records = wfdb_records(data_dir / "mitdb", names=["100", "101", "103", "105"])
        replayer = Replayer(records, settings, devices=8, speed=float("inf"), chunk_ms=40, device_prefix="part")
        replayer.run(duration_s=60.0)
        devices = replayer.device_ids
        assert col.wait_for(lambda: all(any(m["state"] == "stale" for m in col.get(proto.status_topic(d)))
                                        for d in devices), 30)
        owners = {d: [k for k, w in enumerate(workers) if d in w.devices()] for d in devices}
        assert all(len(o) == 1 for o in owners.values()), owners
        assert all(owners[d] == [proto.device_hash(d) % 2] for d in devices)
        assert {o[0] for o in owners.values()} == {0, 1}, "the hash should spread 8 devices over both workers"
        for i, d in enumerate(devices):
            got = [m["sample"] for m in col.get(proto.beats_topic(d))]
            rec = read_record(records[i % len(records)].path)
            expected = [b.sample for b in detect_record(rec.signal_mv[: int(60 * rec.fs_hz)], rec.fs_hz,
                                                        chunk_samples=int(0.04 * rec.fs_hz))]
            assert got == expected, d
            assert len(np.unique(got)) == len(got)
        col.close()
    finally:
        for w in workers:
            w.stop()
