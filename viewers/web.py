"""Live view in the browser: a small HTTP server that relays the published topics to a web page.

Data path: the page takes its data from the broker, through this process, exactly as any other subscriber sees it::

    broker ──beatssl/+/{beats,rhythm,status,errors}, beatssl/edge/+/health, ecg/+/samples──▶ paho network thread
        (LiveHub._on_message: outputs are kept as published; samples are decoded with edge.protocol and
         decimated to ≤ 100 Hz per lead by a per-device Decimator) ──▶ pending updates (under the hub lock)
    ticker thread, every 100 ms: pending updates → one frame, appended to a short ring of frames (Condition)
    one HTTP thread per browser connection on /events (Server-Sent Events): on connect a snapshot of the
        retained state (last status, rhythm history, recent beats and ~15 s of decimated samples), then every
        frame since its cursor, coalesced into one event — at most one event per tick (10 per second) per client.

Threads: paho's network loop (callbacks update the hub under its lock and never block on a browser), the ticker,
the ``ThreadingHTTPServer`` accept loop in one daemon thread, and one daemon thread per HTTP request (an SSE
request lives as long as its page). Browsers never slow the MQTT side down: a client that falls more than the
ring behind gets a fresh snapshot instead of the frames it missed.

Per client, the grid gets one lead per device (``?lead=II``; default II, else MLII, else the first lead) and the
focused device (``?focus=<device>``) all its leads; the page reconnects with new parameters when either changes.

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
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import paho.mqtt.client as paho

from edge import protocol as proto
from edge.ecg import canonical_lead
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
    """The lead the grid shows for a device: ``wanted`` if it has it, else II, else MLII, else its first lead."""
    for name in (wanted, "II", "MLII"):
        if name and name in leads:
            return name
    return leads[0] if leads else None


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
    """What the hub retains of one device for new pages (device times in s)."""

    status: dict[str, Any] | None = None
    rhythm: deque = field(default_factory=lambda: deque(maxlen=10))
    beats: deque = field(default_factory=lambda: deque(maxlen=80))
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    blocks: deque = field(default_factory=deque)
    decimator: Decimator = field(default_factory=Decimator)


@dataclass
class Frame:
    """Updates gathered during one tick: per device lists by kind (``samples`` holds Blocks), and node healths."""

    seq: int
    devices: dict[str, dict[str, list]]
    nodes: dict[str, dict[str, Any]]


class LiveHub:
    """An MQTT subscriber of the published topics that turns them into frames (10 per second at most).

    Args:
        settings: broker connection.
        tick_s: period of frames (s).
        history_s: decimated signal kept for new pages (s of device time).
        ring: frames kept for clients that are behind (beyond it they get a snapshot).
        max_rate_hz: decimated rate per lead (Hz).
    """

    def __init__(self, settings: MqttSettings, tick_s: float = 0.1, history_s: float = 15.0, ring: int = 50,
                 max_rate_hz: float = 100.0):
        self.settings = settings
        self.tick_s = tick_s
        self.history_s = history_s
        self.max_rate_hz = max_rate_hz
        self.devices: dict[str, DeviceState] = {}
        self.nodes: dict[str, dict[str, Any]] = {}
        self.frames: deque[Frame] = deque(maxlen=ring)
        self.subscribed = threading.Event()
        self.stopped = threading.Event()
        self.changed = threading.Condition()  # guards devices, nodes, frames and the pending updates
        self._pending: dict[str, dict[str, list]] = {}
        self._pending_nodes: dict[str, dict[str, Any]] = {}
        self._seq = 0
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

    # ------------------------------------------------------------------ MQTT (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("web view: broker %s refused the connection: %s", self.settings.broker, reason_code)
            return
        subs = [(proto.output_subscription(kind), 1) for kind in ("beats", "rhythm", "status", "errors")]
        subs += [(proto.health_topic("+"), 1), (proto.SAMPLES_SUBSCRIPTION, 0)]
        client.subscribe(subs)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if parts[0] == "beatssl" and parts[1] == "edge":
            self._on_health(parts[2], message.payload)
            return
        device = proto.device_from_topic(message.topic)
        if device is None or not proto.valid_device_id(device):
            return
        if parts[0] == "ecg":
            props = getattr(message, "properties", None)
            self._on_samples(device, message.payload, getattr(props, "ContentType", None) if props else None)
            return
        try:
            payload = json.loads(message.payload)
        except ValueError:
            return
        if isinstance(payload, dict):
            self._on_output(device, parts[2], payload)

    def _on_health(self, node: str, raw: bytes) -> None:
        try:
            payload = json.loads(raw)
        except ValueError:
            return
        with self.changed:
            self.nodes[node] = self._pending_nodes[node] = payload

    def _on_samples(self, device: str, raw: bytes, content_type: str | None) -> None:
        try:
            msg = proto.decode_samples(raw, content_type=content_type)
        except proto.ProtocolError:
            return  # the edge reports it on the errors topic, which the page shows
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
        with self.changed:
            dev = self._device(device)
            if kind == "beats":
                dev.beats.append(payload)
            elif kind == "rhythm":
                dev.rhythm.append(payload)
            elif kind == "status":
                dev.status = payload
            elif kind == "errors":
                dev.errors[str(payload.get("code"))] = payload
            else:
                return
            self._pending_for(device)[kind].append(payload)

    def _device(self, device: str) -> DeviceState:
        dev = self.devices.get(device)
        if dev is None:
            dev = self.devices[device] = DeviceState(decimator=Decimator(self.max_rate_hz))
        return dev

    def _pending_for(self, device: str) -> dict[str, list]:
        pending = self._pending.get(device)
        if pending is None:
            pending = self._pending[device] = {"samples": [], "beats": [], "rhythm": [], "status": [], "errors": []}
        return pending

    # ------------------------------------------------------------------ frames (ticker thread)
    def _tick(self) -> None:
        while not self.stopped.wait(self.tick_s):
            with self.changed:
                if not self._pending and not self._pending_nodes:
                    continue
                self._seq += 1
                for upd in self._pending.values():
                    upd["samples"] = merge_blocks(upd["samples"])
                self.frames.append(Frame(self._seq, self._pending, self._pending_nodes))
                self._pending, self._pending_nodes = {}, {}
                self.changed.notify_all()

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
                       "status": [d.status] if d.status else [], "errors": list(d.errors.values())}
                for name, d in self.devices.items()
            }
            cursor = self.frames[-1].seq if self.frames else 0
            return cursor, Frame(cursor, devices, dict(self.nodes))


def render_frames(frames: list[Frame], lead: str | None, focus: str | None) -> bytes:
    """One SSE ``data`` payload for a client: the frames, with one lead per device (all leads of ``focus``)."""
    out = []
    for frame in frames:
        devices = {}
        for name, upd in frame.devices.items():
            entry: dict[str, Any] = {k: v for k, v in upd.items() if v and k != "samples"}
            if upd["samples"]:
                keep = None if name == focus else {pick_lead(upd["samples"][-1].leads, lead)}
                entry["samples"] = [b.to_json(keep) for b in upd["samples"]]
            devices[name] = entry
        out.append({"seq": frame.seq, "devices": devices, "nodes": frame.nodes})
    return json.dumps({"frames": out}, separators=(",", ":"), allow_nan=False).encode()


# ---------------------------------------------------------------------------------------------- HTTP
class WebServer:
    """The live page on ``http://host:port/`` and its event stream on ``/events``; ``start()`` then ``stop()``.

    Args:
        settings: broker to subscribe to.
        host: bind address; anything but loopback requires ``credentials``.
        port: TCP port, 0 for a free one (see :attr:`port` after construction).
        credentials: ``(user, password)`` for HTTP Basic authentication, or None.

    Raises:
        InsecureBindError: ``host`` is not loopback and no credentials were given.
    """

    def __init__(self, settings: MqttSettings, host: str = "127.0.0.1", port: int = 0,
                 credentials: tuple[str, str] | None = None):
        if not is_loopback(host) and credentials is None:
            raise InsecureBindError(
                f"refusing to serve live ECG data on {host} without credentials: give --http-credentials FILE "
                f"(user:password) or set {CREDENTIALS_ENV}, or bind 127.0.0.1")
        self.host = host
        self.hub = LiveHub(settings)
        self.server = ThreadingHTTPServer((host, port), self._handler(credentials, is_loopback(host)))
        self.server.daemon_threads = True
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

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handler(self, credentials: tuple[str, str] | None, local_only: bool) -> type[BaseHTTPRequestHandler]:
        hub = self.hub
        expected = None
        if credentials is not None:
            expected = "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
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
                    self._event("snapshot", render_frames([snap], lead, focus))
                    quiet_since = time.monotonic()
                    while not hub.stopped.is_set():
                        cursor, frames = hub.frames_after(cursor, timeout_s=1.0)
                        if frames is None:  # this client fell behind the ring: start it over
                            cursor, snap = hub.snapshot()
                            self._event("snapshot", render_frames([snap], lead, focus))
                        elif frames:
                            self._event("frames", render_frames(frames, lead, focus))
                        elif time.monotonic() - quiet_since > 15.0:
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                        else:
                            continue
                        quiet_since = time.monotonic()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the page went away

            def _event(self, name: str, data: bytes) -> None:
                self.wfile.write(b"event: " + name.encode() + b"\ndata: " + data + b"\n\n")
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                return

        return Handler
