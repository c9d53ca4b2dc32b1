"""Live view in the browser: a small HTTP server that relays the published topics to a web page.

Data path: the page takes its data from the broker, through this process, exactly as any other subscriber sees it::

    broker ──beatssl/+/{beats,rhythm,status,errors,episodes,alarms}, beatssl/edge/+/health, ecg/+/samples,
             sim/+/truth──▶ paho network thread
        (LiveHub._on_message: outputs are checked (a JSON object ≤ 64 KiB, finite numbers, a numeric time) and kept
         as published; samples are decoded with edge.protocol and decimated to ≤ 100 Hz per lead by a per-device
         Decimator; a message that fails any of it is counted and dropped) ──▶ pending updates (under the hub lock)
    ticker thread, every 100 ms: pending updates → one frame, appended to a short ring of frames (Condition);
        devices and nodes silent for forget_after_s (300 s) are forgotten, and the frame tells the pages
    one HTTP thread per browser connection on /events (Server-Sent Events): on connect a snapshot of the
        retained state (last status, rhythm history, recent beats and ~15 s of decimated samples), then every
        frame since its cursor, coalesced into one event — at most one event per tick (10 per second) per client.
        Each frame's JSON is rendered once per (lead, focus) choice and shared by the clients that asked for it.

Threads: paho's network loop (callbacks update the hub under its lock and never block on a browser), the ticker,
the HTTP accept loop in one daemon thread, a watchdog thread, and one daemon thread per HTTP connection (an SSE
request lives as long as its page). Browsers never slow the MQTT side down: a client that falls more than the
ring behind gets a fresh snapshot instead of the frames it missed.

Bounds: at most ``max_devices`` (2000) devices and as many edge nodes, the least recently heard evicted first; at
most ``max_connections`` (256) HTTP connections, beyond which the accept loop answers ``503``; a connection has
``request_timeout_s`` (10 s) from its accept to send the request head, and the same limit on every blocking read or
write after it (a page that stops reading is dropped).

Per client, the grid gets one lead per device (``?lead=II``; default the first of edge.ecg.LEAD_PREFERENCE the
device has, else its first lead) and the focused device (``?focus=<device>``) all its leads; the page reconnects
with new parameters when either changes.

Alarm acknowledgement: ``POST /ack`` with the JSON body ``{"device": "<id>", "type": "vt"}`` publishes
``{"v": 1, "type": "vt"}`` on ``beatssl/<device>/alarms/ack`` (QoS 1) through the hub's MQTT client. It is protected
like the page (the same credentials, the same Host check) and accepted only from the page itself: the body must be
``application/json`` (a cross-site form cannot send that without a CORS preflight, which is never answered), and an
``Origin`` or ``Sec-Fetch-Site`` header, when the browser sends one, must name this server.

Demo models: the page writes "diagnosis: demo model" beside the PTB-XL labels when the rhythm message's
``diagnosis_engine`` names a shipped engine (``engines/*/manifest.json``) whose ``metrics.demo`` is true
(:func:`demo_engines`).

Security: by default the server binds 127.0.0.1 only and checks the ``Host`` header (against DNS rebinding).
Any other bind address needs credentials (HTTP Basic, ``user:password`` from a file or ``BEATSSL_HTTP_CREDENTIALS``);
without them :class:`WebServer` refuses to start. Nothing is fetched from the internet: the page is three local files.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import json
import logging
import math
import os
import select
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import paho.mqtt.client as paho

from edge import protocol as proto
from edge.ecg import LEAD_PREFERENCE, canonical_lead, preferred_lead
from edge.interpret.alarms import ALARM_PRIORITY
from edge.transport.mqtt import MqttSettings, make_client

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "web_static"
_STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
CREDENTIALS_ENV = "BEATSSL_HTTP_CREDENTIALS"


class InsecureBindError(ValueError):
    """Refusal to serve ECG data beyond the local machine without credentials."""


def is_loopback(host: str) -> bool:
    """True when ``host`` names the local machine only (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host.strip("[]").lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(host_header: str) -> str:
    """The host part of an HTTP ``Host`` header (``"[::1]:8080"`` → ``"::1"``, ``"localhost:80"`` → ``"localhost"``)."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def parse_credentials(text: str) -> tuple[str, str]:
    """``"user:password"`` → ``(user, password)``; raises ValueError when either part is empty."""
    user, sep, password = text.strip().partition(":")
    if not sep or not user or not password:
        raise ValueError("HTTP credentials must look like user:password (both non-empty)")
    return user, password


def read_credentials(path: Path | None, env_var: str = CREDENTIALS_ENV) -> tuple[str, str] | None:
    """HTTP Basic credentials from a file (first line ``user:password``) or the variable ``env_var``; None if neither.

    Raises:
        ValueError: the file or variable does not hold ``user:password``.
    """
    if path is not None:
        lines = Path(path).read_text().splitlines()
        return parse_credentials(lines[0] if lines else "")
    value = os.environ.get(env_var)
    return parse_credentials(value) if value else None


def pick_lead(leads: tuple[str, ...] | list[str], wanted: str | None) -> str | None:
    """The lead the grid shows for a device: ``wanted`` if it has it, else :func:`edge.ecg.preferred_lead`."""
    if wanted and wanted in leads:
        return wanted
    return leads[preferred_lead(leads)] if leads else None


# ---------------------------------------------------------------------------------------------- output messages
#: Largest output message the view keeps (bytes); the edge's beat messages are ~1-2 kB.
MAX_OUTPUT_BYTES = 64 * 1024
#: Error codes kept per device (the most recent ones).
MAX_ERROR_CODES = 32
#: Largest ``sim/<device>/truth`` message the view takes (a 30 min MIT-BIH record's is ~0.2 MB).
MAX_TRUTH_BYTES = 4 * 1024 * 1024
#: The field each kind of output message must carry as a finite number (the page places the message by it).
_TIME_FIELD = {"beats": "time", "rhythm": "t_end"}
#: Output kinds the view subscribes to (``beatssl/<device>/<kind>``).
OUTPUT_KINDS = ("beats", "rhythm", "status", "errors", "episodes", "alarms")
#: HR trend kept per device: one point per rhythm message (every 2 s) for an hour.
TREND_POINTS = 1800
#: Fields of a truth message the page uses (the rest, e.g. wave boundaries, stays on the broker).
_TRUTH_FIELDS = ("record", "dataset", "labels", "t0", "loop", "span", "beats", "episodes", "alarms")


def demo_engines() -> frozenset[str]:
    """Names of the shipped engines (``engines/*/manifest.json`` of the installed ``engines`` package) whose
    manifest ``metrics`` has ``"demo": true``; empty when the package is absent."""
    try:
        root = Path(str(resources.files("engines")))
    except ModuleNotFoundError:
        return frozenset()
    names = set()
    for path in root.glob("*/manifest.json"):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(manifest, dict) and isinstance(manifest.get("metrics"), dict) \
                and manifest["metrics"].get("demo") is True:
            names.add(str(manifest.get("name", path.parent.name)))
    return frozenset(names)


def reduce_truth(msg: dict[str, Any]) -> dict[str, Any]:
    """The part of a truth message the page draws: record label, span, reference beats (time, symbol), episodes
    and alarms (device times, s)."""
    out = {k: msg[k] for k in _TRUTH_FIELDS if k in msg}
    beats = msg.get("beats")
    if isinstance(beats, dict):
        out["beats"] = {"time": beats.get("time", []), "symbol": beats.get("symbol", [])}
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {text[:20]}")
    return value


def _safe_int(text: str) -> int:
    if len(text.lstrip("-")) > 15:  # beyond 2**53 a browser's JSON.parse loses it
        raise ValueError(f"integer out of range: {text[:20]}")
    return int(text)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def parse_output(raw: bytes, max_bytes: int = MAX_OUTPUT_BYTES) -> dict[str, Any]:
    """An output or health payload as a JSON object the page can be sent (finite numbers only, ≤ ``max_bytes``).

    Raises:
        ValueError: not UTF-8, not JSON, nested too deeply, NaN / Infinity / out-of-range numbers, not an object.
    """
    if len(raw) > max_bytes:
        raise ValueError(f"payload of {len(raw)} B exceeds {max_bytes} B")
    try:
        obj = json.loads(raw, parse_float=_finite_float, parse_int=_safe_int, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise ValueError(f"JSON payload is a {type(obj).__name__}, not an object")
    return obj


# ---------------------------------------------------------------------------------------------- decimation
@dataclass
class Block:
    """Decimated samples of one device: ``rows[i]`` is lead ``leads[i]``, point k at ``t0_s + k * dt_s`` (s, mV)."""

    t0_s: float
    dt_s: float
    leads: tuple[str, ...]
    rows: list[list[float]]

    def to_json(self, keep: set[str] | None) -> dict[str, Any]:
        """JSON form with only the leads in ``keep`` (all when None)."""
        idx = [i for i, name in enumerate(self.leads) if keep is None or name in keep]
        return {"t0": round(self.t0_s, 4), "dt": self.dt_s, "leads": [self.leads[i] for i in idx],
                "data": [self.rows[i] for i in idx]}

    @property
    def t_end_s(self) -> float:
        return self.t0_s + len(self.rows[0]) * self.dt_s if self.rows else self.t0_s


def merge_blocks(blocks: list[Block]) -> list[Block]:
    """Join blocks that continue one another (same leads and step, no gap) into one; the inputs are not changed."""
    out: list[Block] = []
    for b in blocks:
        last = out[-1] if out else None
        if last is not None and last.leads == b.leads and last.dt_s == b.dt_s \
                and abs(b.t0_s - last.t_end_s) < b.dt_s / 2:
            out[-1] = Block(last.t0_s, last.dt_s, last.leads, [x + y for x, y in zip(last.rows, b.rows, strict=True)])
        else:
            out.append(b)
    return out


class Decimator:
    """Per-device, peak-preserving decimation of sample chunks to at most ``max_rate_hz`` per lead.

    Each output point is the sample of its bin of ``ceil(fs / max_rate_hz)`` input samples that lies farthest from
    the bin's mean (so R peaks keep their height), placed at the bin's centre. Chunks that arrive late or twice are
    dropped; a jump forward (lost chunks) starts a new run. State: the format, the partial bin, the next expected t0.
    """

    def __init__(self, max_rate_hz: float = 100.0, tolerance_s: float = 0.02):
        self.max_rate_hz = max_rate_hz
        self.tolerance_s = tolerance_s
        self.reset()

    def reset(self) -> None:
        self.fs_hz = 0.0
        self.leads: tuple[str, ...] = ()
        self.factor = 1
        self.pending = np.zeros((0, 0), dtype=np.float32)
        self.pending_t0_s = 0.0
        self.next_t0_s: float | None = None

    def push(self, msg: proto.SamplesMessage) -> Block | None:
        """Decimate one chunk; returns the complete bins as a Block (None when none completed or the chunk is late)."""
        if msg.fs_hz != self.fs_hz or msg.leads != self.leads:
            self.reset()
            self.fs_hz, self.leads = msg.fs_hz, msg.leads
            self.factor = max(1, math.ceil(msg.fs_hz / self.max_rate_hz))
        if self.next_t0_s is not None and msg.t0_s < self.next_t0_s - self.tolerance_s:
            return None  # duplicate or late chunk: already drawn (or its place is past)
        if self.next_t0_s is None or msg.t0_s > self.next_t0_s + self.tolerance_s:
            self.pending = np.zeros((0, len(msg.leads)), dtype=np.float32)
            self.pending_t0_s = msg.t0_s
        self.next_t0_s = msg.t0_s + msg.n_samples / msg.fs_hz
        data = np.concatenate([self.pending, msg.data_mv])
        n_bins = data.shape[0] // self.factor
        if n_bins == 0:
            self.pending = data
            return None
        bins = data[: n_bins * self.factor].reshape(n_bins, self.factor, -1)
        pick = np.abs(bins - bins.mean(axis=1, keepdims=True)).argmax(axis=1)
        points = np.take_along_axis(bins, pick[:, None, :], axis=1)[:, 0, :]
        dt = self.factor / self.fs_hz
        block = Block(self.pending_t0_s + (self.factor - 1) / (2 * self.fs_hz), dt, self.leads,
                      np.round(points.T.astype(np.float64), 3).tolist())
        self.pending = data[n_bins * self.factor:]
        self.pending_t0_s += n_bins * dt
        return block


# ---------------------------------------------------------------------------------------------- hub
@dataclass
class DeviceState:
    """What the hub retains of one device for new pages (device times in s; ``heard`` is ``time.monotonic()``)."""

    status: dict[str, Any] | None = None
    rhythm: deque = field(default_factory=lambda: deque(maxlen=10))
    trend: deque = field(default_factory=lambda: deque(maxlen=TREND_POINTS))  # [t_end s, hr_bpm] of rhythm msgs
    beats: deque = field(default_factory=lambda: deque(maxlen=80))
    episodes: deque = field(default_factory=lambda: deque(maxlen=20))
    alarms: dict[str, Any] | None = None  # the last alarms message (its ``active`` list is the current set)
    truth: dict[str, Any] | None = None   # the last truth message, reduced (:func:`reduce_truth`)
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: deque = field(default_factory=deque)
    decimator: Decimator = field(default_factory=Decimator)
    heard: float = field(default_factory=time.monotonic)


@dataclass
class Frame:
    """Updates gathered during one tick: per device lists by kind (``samples`` holds Blocks), node healths, and the
    devices and nodes the hub forgot in that tick.

    A frame is immutable once published; its JSON per (lead, focus) is rendered once and shared by the clients
    (:func:`render_frame`).
    """

    seq: int
    devices: dict[str, dict[str, list]]
    nodes: dict[str, dict[str, Any]]
    gone: list[str] = field(default_factory=list)
    gone_nodes: list[str] = field(default_factory=list)
    rendered: dict[tuple[str | None, str | None], bytes] = field(default_factory=dict, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class LiveHub:
    """An MQTT subscriber of the published topics that turns them into frames (10 per second at most).

    Every message is handled on its own: one that cannot be used (malformed JSON or samples, NaN / Infinity,
    wrong types, anything that raises) is counted in ``stats()["bad_messages"]`` and dropped; the others go on.
    State is bounded: at most ``max_devices`` devices (the least recently heard one is evicted for a new one),
    devices and nodes not heard from for ``forget_after_s`` are forgotten (pages are told in the frame's ``gone``).

    Args:
        settings: broker connection.
        tick_s: period of frames (s).
        history_s: decimated signal kept for new pages (s of device time).
        ring: frames kept for clients that are behind (beyond it they get a snapshot).
        max_rate_hz: decimated rate per lead (Hz).
        forget_after_s: a device or edge node silent this long (s, wall clock) is forgotten.
        max_devices: devices kept at most; also the cap on edge nodes.
    """

    def __init__(self, settings: MqttSettings, tick_s: float = 0.1, history_s: float = 15.0, ring: int = 50,
                 max_rate_hz: float = 100.0, forget_after_s: float = 300.0, max_devices: int = 2000):
        self.settings = settings
        self.tick_s = tick_s
        self.history_s = history_s
        self.max_rate_hz = max_rate_hz
        self.forget_after_s = forget_after_s
        self.max_devices = max_devices
        self.devices: OrderedDict[str, DeviceState] = OrderedDict()  # least recently heard first
        self.nodes: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._node_heard: dict[str, float] = {}
        self.frames: deque[Frame] = deque(maxlen=ring)
        self.subscribed = threading.Event()
        self.stopped = threading.Event()
        self.changed = threading.Condition()  # guards devices, nodes, frames, counts and the pending updates
        self._pending: dict[str, dict[str, list]] = {}
        self._pending_nodes: dict[str, dict[str, Any]] = {}
        self._gone: set[str] = set()
        self._gone_nodes: set[str] = set()
        self._seq = 0
        self._counts = {"messages": 0, "bad_messages": 0, "evicted": 0, "forgotten": 0}
        self._render_counts = {"frames_rendered": 0, "frames_served": 0}
        self._render_lock = threading.Lock()
        self.client = make_client(settings, "beatssl-web")
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self._ticker = threading.Thread(target=self._tick, name="web-ticker", daemon=True)

    def start(self) -> LiveHub:
        b = self.settings.broker
        self.client.connect_async(b.host, b.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        self._ticker.start()
        return self

    def stop(self) -> None:
        self.stopped.set()
        with self.changed:
            self.changed.notify_all()
        self._ticker.join(2)
        self.client.disconnect()
        self.client.loop_stop()

    def stats(self) -> dict[str, int]:
        """Monotonic counts (``messages`` received, ``bad_messages`` dropped, devices ``evicted`` by the cap and
        ``forgotten`` for silence) and the current number of ``devices`` and ``nodes``."""
        with self.changed:
            return dict(self._counts, devices=len(self.devices), nodes=len(self.nodes))

    def render_stats(self) -> dict[str, int]:
        """``frames_rendered`` (JSON renderings of a frame) and ``frames_served`` (frames sent to clients)."""
        with self._render_lock:
            return dict(self._render_counts)

    # ------------------------------------------------------------------ MQTT (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("web view: broker %s refused the connection: %s", self.settings.broker, reason_code)
            return
        subs = [(proto.output_subscription(kind), 1) for kind in OUTPUT_KINDS]
        subs += [(proto.HEALTH_SUBSCRIPTION, 1), (proto.SAMPLES_SUBSCRIPTION, 0), (proto.TRUTH_SUBSCRIPTION, 1)]
        client.subscribe(subs)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        """Route one message; whatever it raises stays here (paho's network thread must not die of a payload)."""
        with self.changed:
            self._counts["messages"] += 1
        try:
            self._route(message)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the view
            with self.changed:
                self._counts["bad_messages"] += 1
            log.debug("web view: dropped a message on %s: %s: %s", message.topic, type(exc).__name__, exc)

    def _route(self, message: paho.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) == 4 and parts[:2] == ["beatssl", "edge"] and parts[3] == "health":
            self._on_health(parts[2], parse_output(message.payload))
            return
        device = proto.device_from_topic(message.topic)
        if device is None or not proto.valid_device_id(device):
            raise ValueError(f"no valid device id in topic {message.topic!r}")
        if parts[0] == "ecg":
            props = getattr(message, "properties", None)
            self._on_samples(device, message.payload, getattr(props, "ContentType", None) if props else None)
        elif parts[0] == "sim":
            self._on_output(device, "truth", reduce_truth(parse_output(message.payload, MAX_TRUTH_BYTES)))
        else:
            self._on_output(device, parts[2], parse_output(message.payload))

    def _on_health(self, node: str, payload: dict[str, Any]) -> None:
        with self.changed:
            self.nodes[node] = self._pending_nodes[node] = payload
            self.nodes.move_to_end(node)
            self._node_heard[node] = time.monotonic()
            self._gone_nodes.discard(node)
            while len(self.nodes) > self.max_devices:
                self._forget_node(next(iter(self.nodes)))

    def _on_samples(self, device: str, raw: bytes, content_type: str | None) -> None:
        msg = proto.decode_samples(raw, content_type=content_type)  # ProtocolError: counted as a bad message
        with self.changed:
            dev = self._device(device)
            block = dev.decimator.push(msg)
            if block is None:
                return
            dev.blocks.append(block)
            while dev.blocks and dev.blocks[0].t_end_s < block.t_end_s - self.history_s:
                dev.blocks.popleft()
            self._pending_for(device)["samples"].append(block)

    def _on_output(self, device: str, kind: str, payload: dict[str, Any]) -> None:
        if kind not in (*OUTPUT_KINDS, "truth"):
            raise ValueError(f"unknown output kind {kind!r}")
        time_field = _TIME_FIELD.get(kind)
        if time_field is not None and not isinstance(payload.get(time_field), int | float):
            raise ValueError(f"a {kind} message without a numeric {time_field!r}")
        with self.changed:
            dev = self._device(device)
            if kind == "beats":
                dev.beats.append(payload)
            elif kind == "rhythm":
                dev.rhythm.append(payload)
                if isinstance(payload.get("hr_bpm"), int | float):
                    dev.trend.append([payload["t_end"], payload["hr_bpm"]])
            elif kind == "episodes":
                dev.episodes.append(payload)
            elif kind == "alarms":
                dev.alarms = payload
            elif kind == "truth":
                dev.truth = payload
            elif kind == "status":
                dev.status = payload
            else:
                code = str(payload.get("code"))
                dev.errors.pop(code, None)
                dev.errors[code] = payload
                while len(dev.errors) > MAX_ERROR_CODES:
                    del dev.errors[next(iter(dev.errors))]
            self._pending_for(device)[kind].append(payload)

    def _device(self, device: str) -> DeviceState:
        """The state of ``device``, marked as heard now (created, evicting the least recently heard, if new)."""
        dev = self.devices.get(device)
        if dev is None:
            dev = self.devices[device] = DeviceState(decimator=Decimator(self.max_rate_hz))
            self._gone.discard(device)
            while len(self.devices) > self.max_devices:
                self._forget(next(iter(self.devices)), "evicted")
        else:
            self.devices.move_to_end(device)
            dev.heard = time.monotonic()
        return dev

    def _forget(self, device: str, why: str) -> None:
        del self.devices[device]
        self._pending.pop(device, None)
        self._gone.add(device)
        self._counts[why] += 1

    def _forget_node(self, node: str) -> None:
        del self.nodes[node]
        self._node_heard.pop(node, None)
        self._pending_nodes.pop(node, None)
        self._gone_nodes.add(node)

    def _pending_for(self, device: str) -> dict[str, list]:
        pending = self._pending.get(device)
        if pending is None:
            pending = self._pending[device] = {"samples": [], "truth": [], **{k: [] for k in OUTPUT_KINDS}}
        return pending

    # ------------------------------------------------------------------ frames (ticker thread)
    def _tick(self) -> None:
        while not self.stopped.wait(self.tick_s):
            with self.changed:
                silent_since = time.monotonic() - self.forget_after_s
                while self.devices and next(iter(self.devices.values())).heard < silent_since:
                    self._forget(next(iter(self.devices)), "forgotten")
                while self.nodes and self._node_heard[next(iter(self.nodes))] < silent_since:
                    self._forget_node(next(iter(self.nodes)))
                if not self._pending and not self._pending_nodes and not self._gone and not self._gone_nodes:
                    continue
                self._seq += 1
                for upd in self._pending.values():
                    upd["samples"] = merge_blocks(upd["samples"])
                self.frames.append(Frame(self._seq, self._pending, self._pending_nodes, sorted(self._gone),
                                         sorted(self._gone_nodes)))
                self._pending, self._pending_nodes = {}, {}
                self._gone, self._gone_nodes = set(), set()
                self.changed.notify_all()

    def acknowledge(self, device: str, alarm_type: str, timeout_s: float = 5.0) -> bool:
        """Publish ``{"v": 1, "type": alarm_type}`` on ``beatssl/<device>/alarms/ack`` (QoS 1); True once the broker
        acknowledged it within ``timeout_s``.

        Raises:
            ValueError: not a valid device id, or not an alarm type (edge.interpret.alarms.ALARM_PRIORITY).
        """
        if not proto.valid_device_id(device):
            raise ValueError("not a valid device id")
        if alarm_type not in ALARM_PRIORITY:
            raise ValueError(f"unknown alarm type (one of {', '.join(ALARM_PRIORITY)})")
        info = self.client.publish(proto.alarm_ack_topic(device), proto.dumps({"v": 1, "type": alarm_type}), qos=1)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def frames_after(self, cursor: int, timeout_s: float) -> tuple[int, list[Frame] | None]:
        """Frames newer than ``cursor`` (waits up to ``timeout_s`` for one): ``(new cursor, frames)``.

        ``frames`` is None when the client fell behind the ring (it then needs a snapshot).
        """
        with self.changed:
            if not self.frames or self.frames[-1].seq <= cursor:
                self.changed.wait(timeout_s)
            if not self.frames or self.frames[-1].seq <= cursor:
                return cursor, []
            if self.frames[0].seq > cursor + 1:
                return self.frames[-1].seq, None
            return self.frames[-1].seq, [f for f in self.frames if f.seq > cursor]

    def snapshot(self) -> tuple[int, Frame]:
        """The retained state as one frame, and the cursor it corresponds to."""
        with self.changed:
            devices = {
                name: {"samples": merge_blocks(list(d.blocks)), "beats": list(d.beats), "rhythm": list(d.rhythm),
                       "status": [d.status] if d.status else [], "errors": list(d.errors.values()),
                       "episodes": list(d.episodes), "alarms": [d.alarms] if d.alarms else [],
                       "truth": [d.truth] if d.truth else [], "trend": list(d.trend)}
                for name, d in sorted(self.devices.items())
            }
            cursor = self.frames[-1].seq if self.frames else 0
            return cursor, Frame(cursor, devices, dict(self.nodes))

    def render(self, frames: list[Frame], lead: str | None, focus: str | None) -> bytes:
        """The SSE ``data`` of ``frames`` for one client: each frame's JSON rendered once per (lead, focus) and shared
        (up to :data:`MAX_RENDER_VARIANTS` choices per frame; further ones are rendered for the client alone)."""
        parts = []
        rendered = 0
        for frame in frames:
            with frame.lock:
                part = frame.rendered.get((lead, focus))
                if part is None:
                    part = render_frame(frame, lead, focus)
                    rendered += 1
                    if len(frame.rendered) < MAX_RENDER_VARIANTS:
                        frame.rendered[(lead, focus)] = part
            parts.append(part)
        with self._render_lock:
            self._render_counts["frames_rendered"] += rendered
            self._render_counts["frames_served"] += len(frames)
        return b'{"frames":[' + b",".join(parts) + b"]}"


#: (lead, focus) renderings kept per frame.
MAX_RENDER_VARIANTS = 32


def render_frame(frame: Frame, lead: str | None, focus: str | None) -> bytes:
    """One frame as JSON for a client: one lead per device (all leads of ``focus``), what was forgotten."""
    devices = {}
    for name, upd in frame.devices.items():
        entry: dict[str, Any] = {k: v for k, v in upd.items() if v and k != "samples"}
        if upd["samples"]:
            keep = None if name == focus else {pick_lead(upd["samples"][-1].leads, lead)}
            entry["samples"] = [b.to_json(keep) for b in upd["samples"]]
        devices[name] = entry
    out: dict[str, Any] = {"seq": frame.seq, "devices": devices, "nodes": frame.nodes}
    if frame.gone or frame.gone_nodes:
        out["gone"] = {"devices": frame.gone, "nodes": frame.gone_nodes}
    return json.dumps(out, separators=(",", ":"), allow_nan=False).encode()


def render_snapshot(snapshot: Frame, lead: str | None, focus: str | None,
                    demo: Collection[str] = ()) -> bytes:
    """The SSE ``data`` of a snapshot: the frame, the lead preference order (the page's default lead) and the
    names of the demo engines (:func:`demo_engines`)."""
    return (b'{"frames":[' + render_frame(snapshot, lead, focus) + b'],"lead_preference":'
            + json.dumps(list(LEAD_PREFERENCE)).encode() + b',"demo_engines":'
            + json.dumps(sorted(demo)).encode() + b"}")


# ---------------------------------------------------------------------------------------------- HTTP
_REFUSAL = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 21\r\n"
            b"Retry-After: 5\r\nConnection: close\r\n\r\ntoo many connections\n")


class BoundedHTTPServer(ThreadingHTTPServer):
    """A thread per connection, but at most ``max_connections`` of them, and a deadline on the request head.

    A connection beyond the cap is answered ``503`` from the accept loop (no thread) and closed. A connection that
    has not sent its whole request head (request line and headers) ``request_timeout_s`` after it was accepted is
    shut down by a watchdog thread (slowloris); once the head is in, the same value bounds every blocking socket
    read or write (a page that stops reading its event stream is dropped).
    """

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], max_connections: int,
                 request_timeout_s: float):
        super().__init__(address, handler)
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.refused = 0
        self._lock = threading.Lock()
        self._active = 0
        self._heads: dict[socket.socket, float] = {}  # connections still sending their head → deadline (monotonic)
        self._lingering: dict[socket.socket, float] = {}  # refused connections drained until their client closes
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="web-watchdog", daemon=True)
        self._watchdog.start()

    def active_connections(self) -> int:
        with self._lock:
            return self._active

    def process_request(self, request: socket.socket, client_address: Any) -> None:  # type: ignore[override]
        with self._lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
                self._heads[request] = time.monotonic() + self.request_timeout_s
        if full:
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._release(request)
            raise

    def process_request_thread(self, request: socket.socket, client_address: Any) -> None:  # type: ignore[override]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release(request)

    def head_received(self, request: socket.socket) -> None:
        """The handler has the whole request head: the head deadline no longer applies."""
        with self._lock:
            self._heads.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web view: request from %s failed", client_address, exc_info=True)

    def server_close(self) -> None:
        self._stop.set()
        self._watchdog.join(2)
        super().server_close()

    def _release(self, request: socket.socket) -> None:
        with self._lock:
            self._active -= 1
            self._heads.pop(request, None)

    def _refuse(self, request: socket.socket) -> None:
        with self._lock:
            self.refused += 1
            lingering = len(self._lingering) < self.max_connections
        try:
            request.setblocking(False)
            request.send(_REFUSAL)
            request.shutdown(socket.SHUT_WR)
        except OSError:
            lingering = False
        if not lingering:
            request.close()
            return
        with self._lock:  # closed once the client has read the answer and closed (or after 1 s): no reset
            self._lingering[request] = time.monotonic() + 1.0

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self._lock:
                late = [sock for sock, deadline in self._heads.items() if deadline < now]
                for sock in late:
                    del self._heads[sock]
                lingering = list(self._lingering)
            for sock in late:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # the handler's blocked read returns; its thread ends
                except OSError:
                    pass
            if not lingering:
                continue
            readable = set(select.select(lingering, [], [], 0)[0])
            for sock in lingering:
                done = self._lingering[sock] < now
                if sock in readable:
                    try:
                        done = done or not sock.recv(1 << 16)
                    except OSError:
                        done = True
                if done:
                    with self._lock:
                        del self._lingering[sock]
                    sock.close()


class WebServer:
    """The live page on ``http://host:port/`` and its event stream on ``/events``; ``start()`` then ``stop()``.

    Args:
        settings: broker to subscribe to.
        host: bind address; anything but loopback requires ``credentials``.
        port: TCP port, 0 for a free one (see :attr:`port` after construction).
        credentials: ``(user, password)`` for HTTP Basic authentication, or None.
        request_timeout_s: time a connection has to send its request head, and the limit on any blocking socket
            read or write after it (s).
        max_connections: concurrent connections (each an open page's event stream, or a request); beyond: ``503``.
        forget_after_s, max_devices: the hub's bounds (:class:`LiveHub`).
        demo: engine names the page marks "diagnosis: demo model"; None: :func:`demo_engines`.

    Raises:
        InsecureBindError: ``host`` is not loopback and no credentials were given.
    """

    def __init__(self, settings: MqttSettings, host: str = "127.0.0.1", port: int = 0,
                 credentials: tuple[str, str] | None = None, request_timeout_s: float = 10.0,
                 max_connections: int = 256, forget_after_s: float = 300.0, max_devices: int = 2000,
                 demo: Collection[str] | None = None):
        if not is_loopback(host) and credentials is None:
            raise InsecureBindError(
                f"refusing to serve live ECG data on {host} without credentials: give --http-credentials FILE "
                f"(user:password) or set {CREDENTIALS_ENV}, or bind 127.0.0.1")
        self.host = host
        self.hub = LiveHub(settings, forget_after_s=forget_after_s, max_devices=max_devices)
        self.demo = frozenset(demo_engines() if demo is None else demo)
        self.server = BoundedHTTPServer((host, port), self._handler(credentials, is_loopback(host), request_timeout_s),
                                        max_connections, request_timeout_s)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="web-http", daemon=True)

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}/"

    def start(self) -> WebServer:
        self.hub.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self.hub.stop()
        self.server.shutdown()
        self.server.server_close()

    def active_connections(self) -> int:
        """HTTP connections being served now."""
        return self.server.active_connections()

    def render_stats(self) -> dict[str, int]:
        """See :meth:`LiveHub.render_stats`."""
        return self.hub.render_stats()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self, credentials: tuple[str, str] | None, local_only: bool,
                 timeout_s: float) -> type[BaseHTTPRequestHandler]:
        hub = self.hub
        demo = self.demo
        expected = None
        if credentials is not None:
            expected = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            timeout = timeout_s  # every blocking read and write of the connection (socket timeout)

            def parse_request(self) -> bool:
                ok = super().parse_request()
                self.server.head_received(self.connection)  # type: ignore[attr-defined]
                return ok

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if not self._allowed():
                    return
                url = urlsplit(self.path)
                if url.path == "/events":
                    self._events(parse_qs(url.query))
                elif url.path in _STATIC_FILES:
                    name, ctype = _STATIC_FILES[url.path]
                    self._send(200, ctype, (STATIC_DIR / name).read_bytes())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if not self._allowed():
                    return
                if urlsplit(self.path).path != "/ack":
                    self._send(404, "text/plain; charset=utf-8", b"not found\n")
                    return
                if not self._same_origin():
                    self._send(403, "text/plain; charset=utf-8", b"cross-origin request refused\n")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get_content_type() != "application/json" or not 0 < length <= 1024:
                    self._send(415, "text/plain; charset=utf-8", b"expected a JSON body of at most 1 KiB\n")
                    return
                try:
                    body = parse_output(self.rfile.read(length), 1024)
                    ok = hub.acknowledge(str(body.get("device")), str(body.get("type")))
                except ValueError as exc:
                    self._send(400, "text/plain; charset=utf-8", f"{exc}\n".encode())
                    return
                self._send(202 if ok else 503, "application/json", json.dumps({"published": ok}).encode())

            def _same_origin(self) -> bool:
                site = self.headers.get("Sec-Fetch-Site")
                if site is not None and site not in ("same-origin", "none"):
                    return False
                origin = self.headers.get("Origin")
                return origin is None or urlsplit(origin).netloc == self.headers.get("Host", "")

            def _allowed(self) -> bool:
                if expected is not None:
                    given = self.headers.get("Authorization", "")
                    if not hmac.compare_digest(given.encode(), expected.encode()):
                        self.send_response(401)
                        self.send_header("WWW-Authenticate", 'Basic realm="beatssl-edge", charset="UTF-8"')
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return False
                elif local_only:
                    # against DNS rebinding: a foreign page whose name resolves to 127.0.0.1
                    if not is_loopback(host_name(self.headers.get("Host", ""))):
                        self._send(403, "text/plain; charset=utf-8", b"forbidden host\n")
                        return False
                return True

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self._common_headers(ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _common_headers(self, ctype: str) -> None:
                self.send_header("Content-Type", ctype)
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")

            def _events(self, query: dict[str, list[str]]) -> None:
                lead = canonical_lead(query["lead"][0]) if query.get("lead", [""])[0] not in ("", "auto") else None
                focus = query.get("focus", [""])[0] or None
                self.send_response(200)
                self._common_headers("text/event-stream")
                self.end_headers()
                try:
                    cursor, snap = hub.snapshot()
                    self._event("snapshot", render_snapshot(snap, lead, focus, demo))
                    quiet_since = time.monotonic()
                    while not hub.stopped.is_set():
                        cursor, frames = hub.frames_after(cursor, timeout_s=1.0)
                        if frames is None:  # this client fell behind the ring: start it over
                            cursor, snap = hub.snapshot()
                            self._event("snapshot", render_snapshot(snap, lead, focus, demo))
                        elif frames:
                            self._event("frames", hub.render(frames, lead, focus))
                        elif time.monotonic() - quiet_since > 15.0:
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                        else:
                            continue
                        quiet_since = time.monotonic()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    return  # the page went away, or stopped reading for the request timeout

            def _event(self, name: str, data: bytes) -> None:
                self.wfile.write(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n")
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                return

        return Handler
