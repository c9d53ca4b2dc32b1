"""The web and terminal views under hostile input, on a real mosquitto: malformed messages, device churn,
many and slow HTTP clients, an unreachable broker."""

from __future__ import annotations

import io
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import paho.mqtt.client as paho
from rich.console import Console

from edge import protocol as proto
from edge.transport.mqtt import BrokerAddress, MqttSettings, make_client
from viewers.terminal import LiveView
from viewers.web import LiveHub, WebServer


@contextmanager
def publisher(settings: MqttSettings) -> Iterator[paho.Client]:
    client = make_client(settings, "test-pub")
    client.connect(settings.broker.host, settings.broker.port)
    client.loop_start()
    try:
        yield client
    finally:
        client.disconnect()
        client.loop_stop()


def publish(client: paho.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(5)


def beat(t: float) -> bytes:
    return json.dumps({"v": 1, "time": t, "hr_bpm": 72.0}).encode()


def wait(pred, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.02)
    return bool(pred())


def http_request(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


def http_get(path: str, port: int) -> bytes:
    """The whole response to one GET (the server closes after it: HTTP/1.0)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(http_request(path, port))
        out = b""
        while chunk := sock.recv(1 << 16):
            out += chunk
    return out


def events_of(buffer: bytes) -> list[tuple[str, dict]]:
    """The complete SSE events in what a client has received so far (HTTP head skipped)."""
    body = buffer.partition(b"\r\n\r\n")[2]
    out = []
    for block in body.split(b"\n\n")[:-1]:
        fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line and line[:1] != b":")
        if b"event" in fields:
            out.append((fields[b"event"].decode(), json.loads(fields[b"data"])))
    return out


class SSEClient:
    """One page's event stream, read with a raw socket."""

    def __init__(self, port: int, query: str = "") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(http_request(f"/events{query}", port))
        self.buf = b""

    def read(self, enough, timeout_s: float) -> list[tuple[str, dict]]:
        """All events received so far, once ``enough(events)`` holds or ``timeout_s`` passed."""
        self.sock.settimeout(0.2)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not enough(events_of(self.buf)):
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not chunk:
                break
            self.buf += chunk
        return events_of(self.buf)

    def close(self) -> None:
        self.sock.close()


def beats_of(events: list[tuple[str, dict]], device: str) -> list[float]:
    return [b["time"] for _, data in events for f in data["frames"] for b in f["devices"].get(device, {})
            .get("beats", [])]


# ---------------------------------------------------------------------------------------------- malformed input
def test_malformed_messages_are_contained_and_other_devices_keep_updating(broker) -> None:
    settings = MqttSettings(broker.address)
    good_chunk = proto.SamplesMessage(1, 250.0, ("II",), 0.0, np.zeros((10, 1), np.float32))
    bad_seq = json.loads(proto.encode_samples_json(good_chunk)) | {"seq": 1e400}
    zero_gain = bytearray(proto.encode_samples_binary(good_chunk))
    zero_gain[12:16] = np.float32(0.0).tobytes()  # header: magic, version, n_leads, flags, seq u32, fs f32, gain f32
    bad = [
        (proto.samples_topic("dev-bad"), json.dumps(bad_seq).encode()),
        (proto.samples_topic("dev-bad"), bytes(zero_gain)),
        (proto.beats_topic("dev-bad"), b"[" * 100_000 + b"]" * 100_000),  # deeply nested JSON
        (proto.beats_topic("dev-bad"), b'{"v": 1, "time": 1e400, "hr_bpm": 60}'),  # infinite time
        (proto.beats_topic("dev-bad"), b'{"v": 1, "time": "soon"}'),  # a beat without a time
        (proto.rhythm_topic("dev-bad"), b'\xff\xfe{"t_end": 1}'),  # not UTF-8
        (proto.status_topic("dev-bad"), b"[1, 2, 3]"),  # a JSON list instead of an object
        (proto.errors_topic("dev-bad"), b'{"code": NaN}'),
        (proto.health_topic("node-bad"), b"[]"),
    ]
    with WebServer(settings) as web, publisher(settings) as pub:
        assert web.hub.subscribed.wait(5)
        publish(pub, proto.beats_topic("dev-good"), beat(1.0))
        assert wait(lambda: web.hub.stats()["messages"] >= 1, 5)
        for topic, payload in bad:
            publish(pub, topic, payload)
        for t in (2.0, 3.0):
            publish(pub, proto.beats_topic("dev-good"), beat(t))
        assert wait(lambda: web.hub.stats()["messages"] >= 3 + len(bad), 5), web.hub.stats()
        stats = web.hub.stats()
        sse = SSEClient(web.port)
        snapshot = sse.read(lambda ev: len(ev) >= 1, 5)[:1]
        publish(pub, proto.beats_topic("dev-good"), beat(4.0))  # after the bad ones: still relayed live
        events = sse.read(lambda ev: 4.0 in beats_of(ev, "dev-good"), 5)
        sse.close()
    assert stats["bad_messages"] == len(bad) and stats["messages"] == 3 + len(bad), stats
    assert snapshot and snapshot[0][0] == "snapshot"
    devices = snapshot[0][1]["frames"][0]["devices"]
    assert [b["time"] for b in devices["dev-good"]["beats"]] == [1.0, 2.0, 3.0]
    assert "dev-bad" not in devices and "node-bad" not in snapshot[0][1]["frames"][0]["nodes"]
    assert 4.0 in beats_of(events, "dev-good")


# ---------------------------------------------------------------------------------------------- bounded state
def test_churned_device_ids_leave_the_hub_bounded(broker) -> None:
    settings = MqttSettings(broker.address)
    hub = LiveHub(settings, forget_after_s=1.5, max_devices=100).start()
    try:
        assert hub.subscribed.wait(5)
        with publisher(settings) as pub:
            infos = [pub.publish(proto.beats_topic(f"churn-{i:04d}"), beat(1.0), qos=1) for i in range(1000)]
            for info in infos:
                info.wait_for_publish(10)
            assert wait(lambda: hub.stats()["messages"] >= 1000, 10), hub.stats()
            kept = sorted(hub.snapshot()[1].devices)
            stats = hub.stats()
            deadline = time.monotonic() + 5
            while sorted(hub.snapshot()[1].devices) != ["fresh"] and time.monotonic() < deadline:
                publish(pub, proto.beats_topic("fresh"), beat(1.0))  # a device that keeps talking stays
                time.sleep(0.2)
            forgotten = sorted(hub.snapshot()[1].devices) == ["fresh"]  # the churned ones aged out
            after = hub.stats()
    finally:
        hub.stop()
    assert len(kept) == 100 and kept == [f"churn-{i:04d}" for i in range(900, 1000)]  # the most recently heard
    assert stats["devices"] == 100 and stats["evicted"] == 900
    # "fresh" evicted one more churned id (the cap), the other 99 were forgotten after 1.5 s of silence
    assert forgotten and after["evicted"] == 901 and after["forgotten"] == 99 and after["devices"] == 1, after


# ---------------------------------------------------------------------------------------------- HTTP clients
def test_many_sse_clients_share_frames_and_slow_clients_are_dropped(broker) -> None:
    settings = MqttSettings(broker.address)
    stop = threading.Event()
    with WebServer(settings, request_timeout_s=1.0, max_connections=300) as web, publisher(settings) as pub:
        assert web.hub.subscribed.wait(5)

        def feed() -> None:
            t = 0.0
            while not stop.is_set():
                t += 0.05
                pub.publish(proto.beats_topic("dev-live"), beat(round(t, 2)), qos=0)
                time.sleep(0.05)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            slow = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(50)]
            for s in slow:
                s.sendall(b"GET /index.ht")  # half a request line, then nothing
            sel = selectors.DefaultSelector()
            bufs = {}
            clients = []
            for _ in range(200):  # each sends its request at once (the head deadline runs from the accept)
                c = socket.create_connection(("127.0.0.1", web.port), timeout=5)
                c.sendall(http_request("/events?lead=II", web.port))
                clients.append(c)
                c.setblocking(False)
                sel.register(c, selectors.EVENT_READ)
                bufs[c] = b""
            got_frames: set[socket.socket] = set()
            deadline = time.monotonic() + 20
            while len(got_frames) < len(clients) and time.monotonic() < deadline:
                for key, _ in sel.select(0.2):
                    chunk = key.fileobj.recv(1 << 16)
                    bufs[key.fileobj] += chunk
                    if any(name == "frames" and beats_of([(name, d)], "dev-live")
                           for name, d in events_of(bufs[key.fileobj])):
                        got_frames.add(key.fileobj)
            page = http_get("/", web.port)
            time.sleep(1.5)  # past the request timeout of the slow ones
            dropped = 0
            for s in slow:
                s.settimeout(2)
                try:
                    dropped += s.recv(1 << 16) == b""
                except ConnectionResetError:
                    dropped += 1
                except TimeoutError:
                    pass
            renders = web.render_stats()
        finally:
            stop.set()
            feeder.join(2)
            for s in [*slow, *clients]:
                s.close()
    assert len(got_frames) == 200, f"{len(got_frames)} of 200 SSE clients received a frame"
    assert page.startswith(b"HTTP/1.0 200") and b"<html" in page.lower()
    assert dropped == 50, f"{dropped} of 50 slow clients dropped after the request timeout"
    # one rendering per frame and per (lead, focus) choice, shared by the 200 clients that asked the same
    assert renders["frames_rendered"] <= renders["frames_served"] / 50, renders


def test_connections_beyond_the_cap_get_503(broker) -> None:
    with WebServer(MqttSettings(broker.address), request_timeout_s=5.0, max_connections=5) as web:
        idle = [socket.create_connection(("127.0.0.1", web.port), timeout=5) for _ in range(5)]
        assert wait(lambda: web.active_connections() == 5, 5)
        with socket.create_connection(("127.0.0.1", web.port), timeout=5) as extra:
            extra.sendall(http_request("/", web.port))
            refused = extra.recv(1 << 16)
        for s in idle:
            s.close()
        assert wait(lambda: web.active_connections() == 0, 5)
        served = http_get("/", web.port)
    assert refused.startswith(b"HTTP/1.0 503") or refused.startswith(b"HTTP/1.1 503"), refused[:80]
    assert served.startswith(b"HTTP/1.0 200"), served[:80]


# ---------------------------------------------------------------------------------------------- terminal view
def test_terminal_view_says_the_broker_is_unreachable() -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    view = LiveView(MqttSettings(BrokerAddress("127.0.0.1", port))).start()
    try:
        assert wait(lambda: view.broker_state()[0] == "unreachable", 10), view.broker_state()
        out = io.StringIO()
        Console(file=out, width=160).print(view.table())
    finally:
        view.stop()
    text = out.getvalue()
    assert f"broker 127.0.0.1:{port} unreachable" in text, text
