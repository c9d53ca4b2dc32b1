"""SIGTERM mid-stream: `beatssl-edge run` (a real subprocess) processes what it has taken in, flushes each
device's detector, publishes every beat and waits for the broker's acknowledgements before it exits.

Four MIT-BIH devices stream 30 s each as fast as mosquitto takes them; SIGTERM goes out right after the broker has
acknowledged the last chunk, or half-way through the stream while chunks keep coming. For every device, the beats
received must equal the offline detector (`detect_record`) on exactly the samples the edge processed (its
final retained status says how many): no queued beat is lost or doubled. The node's retained health then says
"offline".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from edge_harness import Collector

from edge import protocol as proto
from edge.detection.beats import detect_record
from edge.transport.mqtt import MqttSettings, make_client
from offline.records import read_record

REPO = Path(__file__).resolve().parent.parent
RECORDS = ("100", "101", "103", "105")
DURATION_S = 30.0
CHUNK_S = 0.04
NODE = "sigterm"


def _edge_process(address: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEATSSL_")}
    cmd = [sys.executable, "-m", "beatssl.cli", "run", "--broker", address, "--no-engines", "--node", NODE,
           "--workers", "2", "--stale-after-s", "60", "--log-level", "info"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("when", ["after_last_chunk", "half_way"])
def test_sigterm_mid_stream_loses_no_queued_beat(broker, data_dir, when: str) -> None:
    settings = MqttSettings(broker.address)
    col = Collector(settings)
    edge = _edge_process(str(broker.address))
    try:
        health = proto.health_topic(NODE)
        assert col.wait_for(lambda: any(m["state"] == "online" for m in col.get(health)), 20), "edge did not start"
        signals = {}
        for name in RECORDS:
            rec = read_record(data_dir / "mitdb" / name)
            signals[f"sig-{name}"] = (rec.signal_mv[: int(DURATION_S * rec.fs_hz)], rec.fs_hz, rec.leads)
        step = int(round(CHUNK_S * 360.0))
        feeder = make_client(settings, "test-feeder")
        feeder.connect(broker.address.host, broker.address.port)
        feeder.loop_start()
        infos = []
        starts = range(0, int(DURATION_S * 360.0), step)
        for i, start in enumerate(starts):  # devices interleaved, as live
            if when == "half_way" and i == len(starts) // 2:
                for info in infos:
                    info.wait_for_publish(30)
                edge.send_signal(signal.SIGTERM)  # while the stream goes on
            for device, (sig, fs, leads) in signals.items():
                msg = proto.SamplesMessage(i, fs, leads, start / fs, sig[start:start + step])
                infos.append(feeder.publish(proto.samples_topic(device), proto.encode_samples_json(msg), qos=1))
        for info in infos:
            info.wait_for_publish(30)
        if when == "after_last_chunk":
            edge.send_signal(signal.SIGTERM)  # right after the broker acknowledged the last chunk
        sent_at = time.monotonic()
        out, _ = edge.communicate(timeout=30)
        assert edge.returncode == 0, out
        assert time.monotonic() - sent_at < 15, "shutdown took too long"
        feeder.disconnect()
        feeder.loop_stop()

        assert col.wait_for(lambda: bool(col.get(health)) and col.get(health)[-1]["state"] == "offline", 10)
        processed = 0
        for device, (sig, fs, _) in signals.items():
            statuses = col.get(proto.status_topic(device))
            if not statuses:
                continue  # the edge never took a chunk of this device: nothing can be lost
            final = statuses[-1]
            assert final["state"] == "stale", (device, final)  # flushed on shutdown
            n = final["counters"]["samples"]
            processed += n
            expected = [b.sample for b in detect_record(sig[:n], fs, chunk_samples=step)]
            got = [m["sample"] for m in col.get(proto.beats_topic(device))]
            assert got == expected, (device, n, len(got), len(expected))
            assert final["counters"]["beats"] == len(expected)
        total = len(signals) * int(DURATION_S * 360.0)
        assert 0 < processed <= total
        if when == "half_way":
            assert processed < total, "SIGTERM half-way should stop the edge before the end of the stream"
    finally:
        if edge.poll() is None:
            edge.kill()
            edge.communicate()
        col.close()
