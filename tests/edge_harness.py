"""Test helpers for live tests: a chunk publisher and a running edge (real paho clients, real broker).

The MQTT collector is :class:`offline.collector.Collector`, re-exported here for the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, make_client
from offline.collector import Collector

__all__ = ["Collector", "Feeder", "running_edge"]


class Feeder:
    """Publishes raw payloads or chunks of a signal on ecg/<device>/samples."""

    def __init__(self, settings: MqttSettings):
        self.client = make_client(settings, "test-feeder")
        b = settings.broker
        self.client.connect(b.host, b.port)
        self.client.loop_start()

    def raw(self, device: str, payload: bytes) -> None:
        self.client.publish(proto.samples_topic(device), payload, qos=1).wait_for_publish(5)

    def chunks(self, signal_mv: np.ndarray, fs_hz: float, leads: tuple[str, ...], chunk_s: float = 0.04,
               seq0: int = 0, t0: float = 0.0) -> list[proto.SamplesMessage]:
        n = max(1, int(round(chunk_s * fs_hz)))
        return [proto.SamplesMessage(seq0 + i, fs_hz, leads, t0 + start / fs_hz, signal_mv[start:start + n])
                for i, start in enumerate(range(0, len(signal_mv), n))]

    def send(self, device: str, msgs: list[proto.SamplesMessage], binary: bool = False) -> None:
        infos = []
        for m in msgs:
            payload = proto.encode_samples_binary(m) if binary else proto.encode_samples_json(m)
            infos.append(self.client.publish(proto.samples_topic(device), payload, qos=1))
        for info in infos:
            info.wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def running_edge(broker: EmbeddedBroker, **overrides: object) -> Iterator[tuple[EdgeApp, MqttSettings]]:
    """An EdgeApp connected to ``broker`` for the duration of the block."""
    settings = MqttSettings(broker.address)
    config = EdgeConfig(mqtt=settings, node="test", **overrides)
    app = EdgeApp(config).start()
    assert app.wait_connected(10), "edge did not connect"
    try:
        yield app, settings
    finally:
        app.stop()
