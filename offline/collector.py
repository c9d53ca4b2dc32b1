"""A small MQTT subscriber that gathers what the edge publishes (its JSON messages, per topic) for scoring and reports.

Used by the benchmarks (``bench/delineation.py``) and the live tests; a real paho client on a real broker.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import paho.mqtt.client as paho

from edge.transport.mqtt import MqttSettings, make_client


class Collector:
    """Subscribes to ``topics`` (QoS 1) and keeps every JSON message per topic, in arrival order (thread-safe).

    Payloads that are not JSON are counted in :attr:`undecodable`, not kept.

    Raises:
        TimeoutError: the subscription was not acknowledged within ``subscribe_timeout_s``.
    """

    def __init__(self, settings: MqttSettings, topics: tuple[str, ...] = ("beatssl/#",),
                 subscribe_timeout_s: float = 5.0):
        self.messages: dict[str, list] = defaultdict(list)
        self.undecodable = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        #: SUBACKs received so far (one per topic per connection): after a broker restart, wait for it to grow
        #: before trusting that nothing published from then on is missed
        self.subacks = 0
        self.client = make_client(settings, "collector")
        self.client.on_connect = lambda c, *a: [c.subscribe(t, qos=1) for t in topics]
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        b = settings.broker
        self.client.connect(b.host, b.port)
        self.client.loop_start()
        if not self._subscribed.wait(subscribe_timeout_s):
            self.close()
            raise TimeoutError(f"collector could not subscribe on {b} within {subscribe_timeout_s} s")

    def _on_subscribe(self, *args: object) -> None:
        self.subacks += 1
        self._subscribed.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(msg.payload)
        except (ValueError, RecursionError):
            with self._lock:
                self.undecodable += 1
            return
        with self._lock:
            self.messages[msg.topic].append(payload)

    def get(self, topic: str) -> list:
        """The messages received on ``topic`` so far (a copy)."""
        with self._lock:
            return list(self.messages.get(topic, []))

    def wait_for(self, pred: Callable[[], bool], timeout_s: float = 10.0) -> bool:
        """Poll ``pred`` every 20 ms until it holds or ``timeout_s`` (s) passed; its last value."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if pred():
                return True
            time.sleep(0.02)
        return pred()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
