"""Live terminal view: subscribes to the edge's published topics (like any other consumer) and renders a table.

It shows exactly what other subscribers see: per device the heart rate (``hr_bpm`` of the last rhythm message: 60 /
median RR of its window, the same number the live page shows), the rhythm call and for how long, the median PR /
QRS / QT / QTc (Bazett) intervals of the rhythm message, the active alarms (``beatssl/<device>/alarms``, retained;
``*`` marks an acknowledged one), beats/s, detection latency, state and error counts, plus each edge node's health.
While the broker cannot be reached (or refuses the view), the table's title says so instead of showing an empty
table; a message it cannot use is counted and skipped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from rich.table import Table
from rich.text import Text

from edge import protocol as proto
from edge.transport.mqtt import MqttSettings, make_client

log = logging.getLogger(__name__)


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
    rhythm: str | None = None           # rhythm call of the last rhythm message
    rhythm_for_s: float | None = None   # t_end - rhythm_since of that message (device s)
    intervals_ms: dict[str, float | None] = field(default_factory=dict)  # its median_intervals_ms
    alarms: list[dict[str, Any]] = field(default_factory=list)  # the active set of the last alarms message


class LiveView:
    """An MQTT subscriber that keeps the latest per-device numbers; ``table()`` renders them.

    The broker state (:meth:`broker_state`) is ``connecting`` until the first attempt ends, then ``connected``,
    ``unreachable`` (no TCP connection; paho retries), ``refused`` (the broker said no, e.g. bad credentials) or
    ``disconnected``.
    """

    def __init__(self, settings: MqttSettings):
        self.settings = settings
        self.devices: dict[str, DeviceView] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.bad_messages = 0
        self._lock = threading.Lock()
        self._broker = ("connecting", time.monotonic(), "")
        self.client = make_client(settings, "beatssl-view")
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> LiveView:
        b = self.settings.broker
        self.client.connect_async(b.host, b.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def broker_state(self) -> tuple[str, float, str]:
        """``(state, since, detail)``: the state named in the class docstring, since when (``time.monotonic()``)
        and the broker's reason where it gave one."""
        with self._lock:
            return self._broker

    def _set_broker(self, state: str, detail: str = "") -> None:
        with self._lock:
            if self._broker[0] != state or self._broker[2] != detail:
                self._broker = (state, time.monotonic(), detail)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            self._set_broker("refused", str(reason_code))
            return
        self._set_broker("connected")
        for kind in ("beats", "status", "errors", "rhythm", "alarms"):
            client.subscribe(proto.output_subscription(kind), qos=0)
        client.subscribe(proto.HEALTH_SUBSCRIPTION, qos=0)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        self._set_broker("unreachable")

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if self.broker_state()[0] == "connected":
            self._set_broker("disconnected", str(reason_code))

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        """Take one message; one it cannot use (not a JSON object, wrong types) is counted and skipped."""
        try:
            self._take(message.topic.split("/"), json.loads(message.payload))
        except (ValueError, TypeError, AttributeError, IndexError, RecursionError) as exc:
            with self._lock:
                self.bad_messages += 1
            log.debug("terminal view: skipped a message on %s: %s", message.topic, exc)

    def _take(self, parts: list[str], payload: Any) -> None:
        if not isinstance(payload, dict):
            raise TypeError(f"payload is a {type(payload).__name__}, not an object")
        with self._lock:
            if parts[1] == "edge":
                self.nodes[parts[2]] = payload
                return
            dev = self.devices.setdefault(parts[1], DeviceView())
            kind = parts[2]
            if kind == "beats":
                dev.beats += 1
                dev.beat_walls.append(time.monotonic())
                dev.latency_s = _number(payload.get("latency_s"))
            elif kind == "status":
                dev.state = str(payload.get("state", "?"))
            elif kind == "errors":
                dev.errors += 1
                dev.last_error = str(payload.get("code", ""))
            elif kind == "rhythm":
                labels = payload.get("diagnosis", [])
                dev.labels = [str(x) for x in labels] if isinstance(labels, list) else []
                dev.hr_bpm = _number(payload.get("hr_bpm"))
                call = payload.get("rhythm")
                dev.rhythm = str(call) if call is not None else None
                since, end = _number(payload.get("rhythm_since")), _number(payload.get("t_end"))
                dev.rhythm_for_s = end - since if since is not None and end is not None else None
                iv = payload.get("median_intervals_ms")
                dev.intervals_ms = {k: _number(iv.get(k)) for k in ("PR", "QRS", "QT", "QTc_bazett")} \
                    if isinstance(iv, dict) else {}
            elif kind == "alarms":
                active = payload.get("active", [])
                dev.alarms = [a for a in active if isinstance(a, dict)] if isinstance(active, list) else []

    def table(self, max_rows: int = 40) -> Table:
        """A rich table of devices and nodes as of now."""
        now = time.monotonic()
        t = Table(title="beatssl-edge — live", expand=False)
        for col, just in (("device", "left"), ("state", "left"), ("HR bpm", "right"), ("rhythm", "left"),
                          ("PR/QRS/QT/QTc ms", "right"), ("alarms", "left"), ("beats", "right"),
                          ("beats/s", "right"), ("latency ms", "right"), ("labels", "left"), ("errors", "left")):
            t.add_column(col, justify=just)
        with self._lock:
            items = sorted(self.devices.items())[:max_rows]
            for name, d in items:
                recent = [w for w in d.beat_walls if now - w <= 10.0]
                rate = len(recent) / 10.0
                t.add_row(
                    name, d.state,
                    f"{d.hr_bpm:.0f}" if d.hr_bpm is not None else "–",
                    f"{d.rhythm} {d.rhythm_for_s:.0f} s" if d.rhythm and d.rhythm_for_s is not None
                    else d.rhythm or "–",
                    "/".join("–" if d.intervals_ms.get(k) is None else f"{d.intervals_ms[k]:.0f}"
                             for k in ("PR", "QRS", "QT", "QTc_bazett")),
                    _alarm_text(d.alarms),
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
        state, since, detail = self.broker_state()
        if state != "connected":
            retrying = " (retrying)" if state in ("unreachable", "disconnected") else ""
            t.title = (f"beatssl-edge — broker {self.settings.broker} {state} for {now - since:.0f} s"
                       f"{f': {detail}' if detail else ''}{retrying}")
            t.title_style = "bold red"
        return t

    def summary(self) -> dict[str, Any]:
        """Per-device beats and last heart rate (for a non-interactive end-of-run report)."""
        with self._lock:
            return {name: {"beats": d.beats, "hr_bpm": d.hr_bpm, "state": d.state, "errors": d.errors}
                    for name, d in sorted(self.devices.items())}


#: rich styles of the alarm priorities (IEC 60601-1-8 colours: high red, medium yellow, low cyan).
ALARM_STYLE = {"high": "bold white on red", "medium": "bold black on yellow", "low": "black on cyan"}


def _alarm_text(active: list[dict[str, Any]]) -> Text | str:
    """The active alarms as coloured ``TYPE`` words (``*`` after an acknowledged one), or ``–``."""
    if not active:
        return "–"
    out = Text()
    for a in active:
        out.append(f" {str(a.get('type', '?')).upper()}{'*' if a.get('acknowledged') else ''} ",
                   style=ALARM_STYLE.get(str(a.get("priority")), ""))
    return out


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        return None
    return float(value)
