"""Operations: Prometheus metrics from a live edge, and MQTT 5 shared-subscription ingest."""

from __future__ import annotations

import urllib.request

from edge_harness import Collector, Feeder, running_edge

from edge import protocol as proto
from edge.metrics import MetricsServer, render
from offline.records import read_record


def _feed_mitdb(settings, data_dir, device: str, seconds: float = 20.0) -> int:
    rec = read_record(data_dir / "mitdb" / "100")
    sig = rec.signal_mv[: int(seconds * rec.fs_hz)]
    feed = Feeder(settings)
    feed.send(device, feed.chunks(sig, rec.fs_hz, rec.leads))
    feed.close()
    return len(sig)


def test_metrics_endpoint_serves_prometheus_text(broker, data_dir) -> None:
    with running_edge(broker) as (edge, settings):
        col = Collector(settings)
        _feed_mitdb(settings, data_dir, "m1")
        assert col.wait_for(lambda: len(col.get(proto.beats_topic("m1"))) >= 20, 10)
        received = len(col.get(proto.beats_topic("m1")))  # the edge counts a beat before it is published
        server = MetricsServer(lambda: edge.health("online"), 0).start()
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
        finally:
            server.stop()
        lines = dict(line.rsplit(" ", 1) for line in body.splitlines() if not line.startswith("#"))
        assert float(lines['beatssl_beats_total{node="test"}']) >= received
        assert float(lines['beatssl_devices{node="test"}']) == 1
        assert 'beatssl_detection_latency_seconds{node="test",quantile="0.99"}' in lines
        assert "# TYPE beatssl_beats_total counter" in body
        col.close()


def test_render_without_traffic_has_no_quantiles() -> None:
    text = render({"node": "n", "devices": 0, "devices_online": 0, "beats": 0, "published": 0,
                   "publish_dropped": 0, "rejected": {}, "queue_depth": 0, "detection_latency_s": None})
    assert 'beatssl_beats_total{node="n"} 0' in text and "quantile" not in text


def test_shared_subscription_ingest(broker, data_dir) -> None:
    with running_edge(broker, shared_group="edges") as (edge, settings):
        col = Collector(settings)
        _feed_mitdb(settings, data_dir, "s1")
        assert col.wait_for(lambda: len(col.get(proto.beats_topic("s1"))) >= 20, 10)
        assert edge.devices()["s1"].counters.errors == {}
        col.close()
