"""The edge application: MQTT in → per-device streams → MQTT out. All of the edge's concurrency lives here.

Data flow (one place to read it)::

    broker ──ecg/<dev>/samples──▶ paho network thread ──(device hash)──▶ worker queue k ──▶ worker thread k
        worker k: decode + validate (edge.protocol) → DeviceStream.ingest (edge.pipeline.device: seq, resample,
                  filter, detect, cut windows) → publish beats / status / errors / rhythm (QoS 1)
                  → windows to the engine schedulers
    scheduler per engine (edge.inference.batching): batches windows of all devices → Engine.infer → results back to the
                  owning worker's queue → DeviceStream.on_result → publish segmented beats / rhythm labels
    housekeeping thread: every second asks each worker to expire silent devices; publishes node health (retained)

Threads: paho's network loop (callbacks only enqueue), ``workers`` worker threads (each owns the DeviceStreams of
the devices hashed to it, so a device's chunks are processed in order and no lock guards stream state), one
scheduler thread per loaded engine (the only user of that engine), and one housekeeping thread. A device's
exception is caught, reported on its ``errors`` topic and its stream restarted; other devices go on. When a worker
queue is full the network thread waits (up to ``enqueue_timeout_s``), which pushes back on the broker — it keeps the
QoS 1 messages until we read them; only beyond that wait is a chunk dropped and counted (``overload``).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from edge import protocol as proto
from edge.ecg import INTERNAL_FS_HZ
from edge.inference import Engine, load_engine
from edge.inference.batching import BatchScheduler, InferenceRequest
from edge.pipeline.device import DeviceStream, Output, StreamConfig
from edge.pipeline.device_inference import InferencePlan
from edge.transport.mqtt import MqttSettings, connect_properties, make_client

log = logging.getLogger(__name__)


@dataclass
class EdgeConfig:
    """Settings of one edge node.

    Attributes:
        mqtt: broker connection.
        node: node name used in the health topic.
        workers: worker threads (devices are spread over them by a stable hash).
        queue_size: bound of each worker's input queue (chunks).
        enqueue_timeout_s: how long the network thread waits for room in a full worker queue before dropping the
            chunk (``overload``). Waiting pushes back on the broker (it holds QoS 1 messages for us) instead of
            losing data when input briefly outpaces processing.
        stale_after_s: wall time without data after which a device is flushed and reported stale.
        forget_after_s: wall time after which a stale device's state is dropped.
        health_interval_s: period of the retained health message.
        limits: payload bounds.
        stream: per-device tunables.
        partition: ``(k, n)`` — handle only devices whose stable hash mod n == k; None handles all.
        shared_group: subscribe through the MQTT 5 shared subscription ``$share/<group>/ecg/+/samples``; only for
            brokers that keep one device on one member (EMQX ``sticky`` / ``hash_topic`` strategy): a round-robin
            broker (mosquitto) would split a device's chunks over workers. See docs/deploy.md.
        engines: engine folders to load (at most one ``segment`` and one ``classify``).
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``; threads: ONNX Runtime intra-op threads per engine (None: its
            default pool of one spinning thread per core — measured 2–4.5x costlier on 2 cores).
        max_batch / max_wait_ms: batching across devices (windows per engine call / longest wait for a batch).
        seg_leads: leads to segment per beat (``("all",)`` for all; empty: lead II or the stream's first).
        rhythm_hop_s: period of rhythm messages per device (s of device time).
    """

    mqtt: MqttSettings
    node: str = field(default_factory=socket.gethostname)
    workers: int = 2
    queue_size: int = 2000
    enqueue_timeout_s: float = 5.0
    stale_after_s: float = 5.0
    forget_after_s: float = 300.0
    health_interval_s: float = 5.0
    limits: proto.Limits = field(default_factory=proto.Limits)
    stream: StreamConfig = field(default_factory=StreamConfig)
    partition: tuple[int, int] | None = None
    shared_group: str | None = None
    engines: tuple[Path, ...] = ()
    backend: str = "auto"
    threads: int | None = 1
    max_batch: int = 64
    max_wait_ms: float = 20.0
    seg_leads: tuple[str, ...] = ()
    rhythm_hop_s: float = 2.0


class _Expire:
    """Queue item asking a worker to expire its silent devices."""


@dataclass
class _Result:
    """Queue item carrying an engine output back to the worker that owns the device."""

    request: InferenceRequest
    output: np.ndarray | None


def load_plan(config: EdgeConfig) -> tuple[InferencePlan | None, dict[str, Engine]]:
    """Load the configured engines; return the inference plan and the engines by task.

    Raises:
        ManifestError / EngineError / ValueError: with a one-line message naming the engine.
    """
    engines: dict[str, Engine] = {}
    for folder in config.engines:
        engine = load_engine(folder, config.backend, config.threads)
        task = engine.manifest.task
        if task in engines:
            raise ValueError(f"two {task} engines given ({engines[task].manifest.name}, {engine.manifest.name})")
        engines[task] = engine
    seg, cls = engines.get("segment"), engines.get("classify")
    plan = InferencePlan(
        fs_hz=INTERNAL_FS_HZ, seg=seg.manifest if seg else None, cls=cls.manifest if cls else None,
        seg_leads=config.seg_leads, rhythm_hop_s=config.rhythm_hop_s,
    )
    return plan, engines


class EdgeApp:
    """One edge node. ``start()``, then ``stop()`` (also a context manager)."""

    def __init__(self, config: EdgeConfig):
        self.config = config
        self.started_wall = time.time()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.published = 0
        self.publish_dropped = 0
        self.rejected: dict[str, int] = {}
        self._latency_s: deque[float] = deque(maxlen=5000)
        self._proc_ms: deque[float] = deque(maxlen=5000)
        self._rhythm_ms: deque[float] = deque(maxlen=5000)
        self.plan, self.engines = load_plan(config)
        self.schedulers = {
            task: BatchScheduler(engine, self._deliver, config.max_batch, config.max_wait_ms)
            for task, engine in self.engines.items()
        }
        self._streams: list[dict[str, DeviceStream]] = [{} for _ in range(config.workers)]
        self._queues: list[queue.Queue] = [queue.Queue(config.queue_size) for _ in range(config.workers)]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._health_topic = proto.health_topic(config.node)
        will = (self._health_topic, self._offline())
        self.client = make_client(config.mqtt, f"beatssl-edge-{config.node}", will=will)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self._unsubscribed = threading.Event()
        self.client.on_unsubscribe = lambda *_: self._unsubscribed.set()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EdgeApp:
        for scheduler in self.schedulers.values():
            scheduler.start()
        for k in range(self.config.workers):
            t = threading.Thread(target=self._work, args=(k,), name=f"edge-worker-{k}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._housekeeping, name="edge-housekeeping", daemon=True)
        t.start()
        self._threads.append(t)
        m = self.config.mqtt
        self.client.connect_async(m.broker.host, m.broker.port, keepalive=m.keepalive_s,
                                  clean_start=paho.MQTT_CLEAN_START_FIRST_ONLY,
                                  properties=connect_properties(m))
        self.client.loop_start()
        return self

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Block until connected and subscribed to the samples topic; False after ``timeout_s``."""
        return self.subscribed.wait(timeout_s)

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Take no more input, process what is queued, flush every device's detector, publish it all, mark the node
        offline and disconnect once the broker has acknowledged every output (or after ``drain_timeout_s``)."""
        deadline = time.monotonic() + drain_timeout_s
        if self.subscribed.is_set() and self.client.is_connected():
            # after the UNSUBACK no more chunks come: everything we acknowledged (PUBACK) is in a worker queue
            self.client.unsubscribe(self._subscription())
            self._unsubscribed.wait(min(2.0, drain_timeout_s))
        while any(not q.empty() for q in self._queues) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        for q in self._queues:
            q.put(None)
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        for scheduler in self.schedulers.values():
            scheduler.stop()
        for engine in self.engines.values():
            engine.close()
        self._publish(self._health_topic, self._offline(), retain=True)
        while self.client.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._wait_inflight(deadline)
        self.client.disconnect()
        self.client.loop_stop()

    def _wait_inflight(self, deadline: float) -> None:
        # paho keeps unacknowledged QoS 1 messages in _out_messages; wait for the broker's PUBACKs
        while getattr(self.client, "_out_messages", None) and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> EdgeApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ MQTT callbacks (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.config.mqtt.broker, reason_code)
            return
        client.subscribe(self._subscription(), qos=1)
        self._publish(self._health_topic, proto.dumps(self.health("online")), retain=True)
        log.info("connected to %s", self.config.mqtt.broker)
        self.connected.set()

    def _subscription(self) -> str:
        group = self.config.shared_group
        return proto.shared_samples_subscription(group) if group else proto.SAMPLES_SUBSCRIPTION

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting", reason_code)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        device = proto.device_from_topic(message.topic)
        if device is None or not proto.valid_device_id(device):
            self._reject("bad_device_id", f"topic {message.topic[:80]!r} has no valid device id")
            return
        if self.config.partition is not None:
            k, n = self.config.partition
            if proto.device_hash(device) % n != k:
                return
        props = getattr(message, "properties", None)
        content_type = getattr(props, "ContentType", None) if props is not None else None
        item = (device, message.payload, content_type, time.monotonic())
        try:
            queue_k = self._queues[proto.device_hash(device) % self.config.workers]
            queue_k.put(item, timeout=self.config.enqueue_timeout_s)
        except queue.Full:
            self._reject("overload", f"worker queue full; chunk of {device} dropped")

    # ------------------------------------------------------------------ workers
    def _work(self, k: int) -> None:
        streams = self._streams[k]
        q = self._queues[k]
        while True:
            item = q.get()
            if item is None:  # shutting down: flush the detectors, so beats still in their look-ahead go out
                for device, stream in list(streams.items()):
                    self._emit(device, stream.expire())
                return
            if isinstance(item, _Expire):
                self._expire(streams)
                continue
            if isinstance(item, _Result):
                stream = streams.get(item.request.device)
                if stream is not None:
                    self._emit(item.request.device, stream.on_result(item.request, item.output))
                continue
            device, payload, content_type, arrival = item
            stream = streams.get(device)
            if stream is None:
                stream = streams[device] = self._new_stream(device)
            try:
                msg = proto.decode_samples(payload, self.config.limits, content_type)
                outputs = stream.ingest(msg, arrival)
            except proto.ProtocolError as exc:
                outputs = stream.error(exc.code, str(exc))
            except Exception as exc:  # noqa: BLE001 - one device's failure must not stop the others
                log.exception("device %s: internal error", device)
                streams[device] = stream = self._new_stream(device)
                outputs = stream.error("internal", f"{type(exc).__name__}: {exc}; stream restarted")
            self._emit(device, outputs)
            self._submit(stream)

    def _new_stream(self, device: str) -> DeviceStream:
        return DeviceStream(device, self.config.stream, self.plan)

    def _submit(self, stream: DeviceStream) -> None:
        for request in stream.take_requests():
            scheduler = self.schedulers["segment" if request.kind == "seg" else "classify"]
            if not scheduler.submit(request):
                self._emit(stream.device_id, stream.on_result(request, None))

    def _deliver(self, request: InferenceRequest, output: np.ndarray | None) -> None:
        """Scheduler thread → the worker that owns the device (blocking put: results are never dropped)."""
        self._queues[proto.device_hash(request.device) % self.config.workers].put(_Result(request, output))

    def _expire(self, streams: dict[str, DeviceStream]) -> None:
        now = time.monotonic()
        for device, stream in list(streams.items()):
            idle = now - stream.last_arrival
            if idle > self.config.forget_after_s:
                del streams[device]
            elif idle > self.config.stale_after_s and stream.state != "stale":
                self._emit(device, stream.expire())
                self._submit(stream)

    def _emit(self, device: str, outputs: list[Output]) -> None:
        topics = {"beats": proto.beats_topic, "status": proto.status_topic, "errors": proto.errors_topic,
                  "rhythm": proto.rhythm_topic}
        for out in outputs:
            if out.kind == "beats":
                self._latency_s.append(out.payload["latency_s"])
                self._proc_ms.append(out.payload["proc_ms"])
            elif out.kind == "rhythm":
                self._rhythm_ms.append(out.payload["proc_ms"])
            self._publish(topics[out.kind](device), proto.dumps(out.payload), retain=out.retain)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            self.publish_dropped += 1
        else:
            self.published += 1

    def _reject(self, code: str, message: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1
        if self.rejected[code] in (1, 10, 100, 1000) or self.rejected[code] % 10000 == 0:
            log.warning("%s (%d so far)", message, self.rejected[code])
            payload = {"v": proto.PROTOCOL_VERSION, "code": code, "message": message, "count": self.rejected[code]}
            self._publish(proto.node_errors_topic(self.config.node), proto.dumps(payload))

    # ------------------------------------------------------------------ housekeeping
    def _housekeeping(self) -> None:
        next_health = time.monotonic() + self.config.health_interval_s
        while not self._stop.wait(1.0):
            for q in self._queues:
                try:
                    q.put_nowait(_Expire())
                except queue.Full:
                    pass
            if time.monotonic() >= next_health and self.connected.is_set():
                self._publish(self._health_topic, proto.dumps(self.health("online")), retain=True)
                next_health = time.monotonic() + self.config.health_interval_s

    def devices(self) -> dict[str, DeviceStream]:
        """A snapshot of all device streams of this node (read-only use)."""
        return {dev: s for streams in self._streams for dev, s in list(streams.items())}

    def health(self, state: str) -> dict[str, Any]:
        """The node's health message: state, devices, counters and latency percentiles."""
        devices = self.devices()
        lat = np.asarray(self._latency_s, dtype=float)
        proc = np.asarray(self._proc_ms, dtype=float)
        rhythm = np.asarray(self._rhythm_ms, dtype=float)

        def pct(a: np.ndarray) -> dict[str, float] | None:
            if not len(a):
                return None
            p50, p95, p99 = np.percentile(a, [50, 95, 99])
            return {"p50": round(float(p50), 4), "p95": round(float(p95), 4), "p99": round(float(p99), 4)}

        return {
            "v": proto.PROTOCOL_VERSION,
            "node": self.config.node,
            "state": state,
            "uptime_s": round(time.time() - self.started_wall, 1),
            "devices": len(devices),
            "devices_online": sum(s.state == "online" for s in devices.values()),
            "beats": sum(s.counters.beats for s in devices.values()),
            "published": self.published,
            "publish_dropped": self.publish_dropped,
            "rejected": dict(self.rejected),
            "queue_depth": sum(q.qsize() for q in self._queues),
            "detection_latency_s": pct(lat),
            "processing_ms": pct(proc),
            "rhythm_processing_ms": pct(rhythm),
            "partition": list(self.config.partition) if self.config.partition else None,
            "engines": {
                task: {"name": e.manifest.name, "backend": e.backend.name, **self.schedulers[task].stats.summary()}
                for task, e in self.engines.items()
            },
        }

    def _offline(self) -> bytes:
        return proto.dumps({"v": proto.PROTOCOL_VERSION, "node": self.config.node, "state": "offline"})
