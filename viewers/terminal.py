"""Live terminal view: subscribes to the edge's published topics (like any other consumer) and renders a table.

It shows exactly what other subscribers see: per device heart rate, beats/s, detection latency, state and error
counts, plus each edge node's health.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from rich.table import Table

from edge import protocol as proto
from edge.transport.mqtt import MqttSettings, make_client


@dataclass
class DeviceView:
    """What the view knows of one device (wall times are ``time.monotonic()``)."""

    hr_bpm: float | None = None
    beats: int = 0
    beat_walls: deque = field(default_factory=lambda: deque(maxlen=256))
    latency_s: float | None = None
    state: str = "?"
    errors: int = 0
    last_error: str = ""
    labels: list[str] = field(default_factory=list)


class LiveView:
    """An MQTT subscriber that keeps the latest per-device numbers; ``table()`` renders them."""

    def __init__(self, settings: MqttSettings):
        self.settings = settings
        self.devices: dict[str, DeviceView] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.client = make_client(settings, "beatssl-view")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def start(self) -> LiveView:
        b = self.settings.broker
        self.client.connect_async(b.host, b.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        for kind in ("beats", "status", "errors", "rhythm"):
            client.subscribe(proto.output_subscription(kind), qos=0)
        client.subscribe(proto.health_topic("+"), qos=0)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        parts = message.topic.split("/")
        with self._lock:
            if parts[1] == "edge":
                self.nodes[parts[2]] = payload
                return
            dev = self.devices.setdefault(parts[1], DeviceView())
            kind = parts[2]
            if kind == "beats":
                dev.beats += 1
                dev.beat_walls.append(time.monotonic())
                dev.hr_bpm = payload.get("hr_bpm") or dev.hr_bpm
                dev.latency_s = payload.get("latency_s")
            elif kind == "status":
                dev.state = payload.get("state", "?")
            elif kind == "errors":
                dev.errors += 1
                dev.last_error = payload.get("code", "")
            elif kind == "rhythm":
                dev.labels = list(payload.get("labels", []))

    def table(self, max_rows: int = 40) -> Table:
        """A rich table of devices and nodes as of now."""
        now = time.monotonic()
        t = Table(title="beatssl-edge — live", expand=False)
        for col, just in (("device", "left"), ("state", "left"), ("HR bpm", "right"), ("beats", "right"),
                          ("beats/s", "right"), ("latency ms", "right"), ("labels", "left"), ("errors", "left")):
            t.add_column(col, justify=just)
        with self._lock:
            items = sorted(self.devices.items())[:max_rows]
            for name, d in items:
                recent = [w for w in d.beat_walls if now - w <= 10.0]
                rate = len(recent) / 10.0
                t.add_row(
                    name, d.state,
                    f"{d.hr_bpm:.0f}" if d.hr_bpm else "–",
                    str(d.beats), f"{rate:.2f}",
                    f"{d.latency_s * 1e3:.0f}" if d.latency_s is not None else "–",
                    ",".join(d.labels) or "–",
                    f"{d.errors} ({d.last_error})" if d.errors else "0",
                )
            total = sum(d.beats for d in self.devices.values())
            nodes = ", ".join(
                f"{n}: {h.get('state')} {h.get('devices', 0)} dev, p99 det "
                f"{(h.get('detection_latency_s') or {}).get('p99', '–')} s"
                for n, h in self.nodes.items()
            )
        t.caption = f"{len(self.devices)} devices, {total} beats · nodes: {nodes or '–'}"
        return t

    def summary(self) -> dict[str, Any]:
        """Per-device beats and last heart rate (for a non-interactive end-of-run report)."""
        with self._lock:
            return {name: {"beats": d.beats, "hr_bpm": d.hr_bpm, "state": d.state, "errors": d.errors}
                    for name, d in sorted(self.devices.items())}
