"""The edge application: MQTT in → per-device streams → MQTT out. All of the edge's concurrency is wired here, in
:meth:`EdgeApp.compose`, and torn down in :meth:`EdgeApp.stop`.

Data flow (one place to read it)::

    broker ──ecg/<dev>/samples──▶ ingest: paho network thread ──(device hash)──▶ inbox k ──▶ worker thread k
        worker k: decode + validate (edge.protocol) → DeviceStream.push (edge.pipeline: sequence, clock,
                  resample, filter, detect, cut windows) → publish beats / status / errors / rhythm (QoS 1)
                  → windows to the engine schedulers
    scheduler per engine (edge.inference.batching): batches windows of all devices → Engine.infer → results back
                  to the owning worker's inbox → DeviceStream.on_result → publish segmented beats / rhythm labels
    housekeeping thread: every second asks each worker to expire silent devices (not while the node itself is cut
                  off from the broker), republishes device status and node health (retained), and watches every
                  thread: one that died makes the node *failed* (``failed`` is set, health says so, ``run`` exits 1).

Threads: paho's network loop (callbacks only enqueue), ``workers`` worker threads (each owns the DeviceStreams of
the devices hashed to it, so a device's chunks are processed in order and no lock guards stream state), one
scheduler thread per loaded engine (the only user of that engine), and one housekeeping thread. Every exception of
one device's work (a chunk, an engine result, an expiry) is caught, reported on its ``errors`` topic (``internal``)
and its stream restarted; other devices go on.

Back-pressure, one rule per queue:
  * inbox (chunks): bounded by ``queue_size`` chunks; the network thread waits up to ``enqueue_timeout_s`` for room,
    which pushes back on the broker (it keeps QoS 1 messages until we read them); beyond that wait the chunk is
    dropped and counted (``overload`` on the node's errors topic).
  * scheduler (windows): bounded; a window that finds it full is answered at once with no result (the beat goes out
    without waves, the rhythm message says ``inference_failed``), counted as ``rejected`` in health.
  * results and control items are never dropped: they bypass the inbox bound (their number is bounded by the
    schedulers' own bound).

Blocks: a chunk whose device already has chunks waiting in the inbox (nothing but engine results queued after them)
joins them, up to :data:`BLOCK_CHUNKS`, and the worker processes them as one block of samples
(:meth:`DeviceStream.push_many`: the same beats, classes and episodes as chunk by chunk). The inbox holds a device's
chunks up to ``hold_ms`` (160 ms: four 40 ms chunks) for the next ones, so that a worker that keeps up still pays
each device's per-chunk cost once per block (measured: bench/README.md, "CPU per device-second"); one that fell
behind gets blocks of up to :data:`BLOCK_CHUNKS`, so a backlog shrinks instead of feeding itself. Engine results pass
held chunks; control items and a half-full inbox release them at once (:class:`Inbox`).

Shutdown order (:meth:`EdgeApp.stop`): ingest (unsubscribe; after the UNSUBACK no chunk comes) → devices (inboxes
drained, every stream flushed, so beats in the detectors' look-ahead go out) → schedulers (every window submitted so
far is run and its result handed back to the still-running workers: in-flight beats keep their waves) → workers →
publisher (offline health, wait for the broker's PUBACKs, disconnect).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho

from edge import protocol as proto
from edge.cluster import Membership
from edge.ecg import INTERNAL_FS_HZ
from edge.inference import Engine, load_engine
from edge.inference.batching import BatchScheduler, InferenceRequest
from edge.interpret.alarms import AlarmLimits
from edge.pipeline.device import DeviceStream, StreamConfig
from edge.pipeline.device_inference import REQUEST_TASK, InferencePlan
from edge.pipeline.outputs import Output
from edge.pipeline.warmup import warm_up
from edge.transport.mqtt import MqttSettings, connect_properties, make_client

log = logging.getLogger(__name__)

#: How long (s) a node waits for a device's retained status after taking it up; none by then: there is none stored.
STATUS_READ_S = 10.0


@dataclass
class EdgeConfig:
    """Settings of one edge node.

    Attributes:
        mqtt: broker connection.
        node: node name used in the health topic.
        workers: worker threads (devices are spread over them by a stable hash).
        queue_size: bound of each worker's input queue (chunks).
        hold_ms: how long a device's chunks may wait in its worker's inbox for the next ones, so that they are
            processed as one block (ms; 0: each at once): less CPU per device-second, beats up to this much later
            (:class:`Inbox`).
        enqueue_timeout_s: how long the network thread waits for room in a full worker queue before dropping the
            chunk (``overload``). Waiting pushes back on the broker (it holds QoS 1 messages for us) instead of
            losing data when input briefly outpaces processing.
        stale_after_s: wall time without data after which a device is flushed and reported stale (the clock is
            paused while the node itself is disconnected from the broker).
        forget_after_s: wall time without data after which a device's state is dropped.
        max_devices: most devices held at once; chunks of further devices are dropped (``device_cap``).
        health_interval_s: period of the retained health message.
        limits: payload bounds.
        stream: per-device tunables.
        partition: ``(k, n)`` — handle only devices whose stable hash mod n == k; None handles all.
        shared_group: subscribe through the MQTT 5 shared subscription ``$share/<group>/ecg/+/samples``; only for
            brokers that keep one device on one member (EMQX ``sticky`` / ``hash_topic`` strategy): a round-robin
            broker (mosquitto) would split a device's chunks over workers. See docs/deploy.md.
        cluster: failover (rendezvous) mode among the nodes of this cluster name: subscribe to all samples and to
            every node's health, handle a device iff this node is its rendezvous owner among the live nodes
            (:mod:`edge.cluster`); a membership change hands devices over (flushed and forgotten by the old owner,
            status ``moved``). The MQTT session then expires at disconnect (a node that comes back must not replay
            what the others handled meanwhile). None: no failover.
        engines: engine folders to load (at most one per task: ``segment``, ``classify``, ``beat-classify``).
        backend: ``auto``, ``onnxruntime`` or ``tensorrt``; threads: ONNX Runtime intra-op threads per engine (None: its
            default pool of one spinning thread per core — measured 2–4.5x costlier on 2 cores).
        max_batch / max_wait_ms: batching across devices (windows per engine call / longest wait for a batch).
        seg_leads: leads to segment per beat (``("all",)`` for all; empty: two leads,
            :func:`edge.pipeline.device_inference.default_seg_leads`).
        rhythm_hop_s: period of rhythm messages per device (s of device time).
        diagnosis_every_s: how often (s of device time) the diagnosis classifier runs on a device's rhythm window;
            the hops between carry its last answer (:class:`~edge.pipeline.device_inference.InferencePlan`).
        alarm_limits: alarm limits of every device; device_alarm_limits: per-device overrides by device id.
    """

    mqtt: MqttSettings
    node: str = field(default_factory=socket.gethostname)
    workers: int = 2
    queue_size: int = 2000
    hold_ms: float = 160.0
    enqueue_timeout_s: float = 5.0
    stale_after_s: float = 5.0
    forget_after_s: float = 300.0
    max_devices: int = 5000
    health_interval_s: float = 5.0
    limits: proto.Limits = field(default_factory=proto.Limits)
    stream: StreamConfig = field(default_factory=StreamConfig)
    partition: tuple[int, int] | None = None
    shared_group: str | None = None
    cluster: str | None = None
    engines: tuple[Path, ...] = ()
    backend: str = "auto"
    threads: int | None = 1
    max_batch: int = 64
    max_wait_ms: float = 20.0
    seg_leads: tuple[str, ...] = ()
    rhythm_hop_s: float = 2.0
    diagnosis_every_s: float = 10.0
    alarm_limits: AlarmLimits = field(default_factory=AlarmLimits)
    device_alarm_limits: dict[str, AlarmLimits] = field(default_factory=dict)


#: The topic of each kind of per-device output (:class:`~edge.pipeline.outputs.Output` ``kind``).
OUTPUT_TOPICS: dict[str, Callable[[str], str]] = {
    "beats": proto.beats_topic, "status": proto.status_topic, "errors": proto.errors_topic,
    "rhythm": proto.rhythm_topic, "episodes": proto.episodes_topic, "alarms": proto.alarms_topic,
}


@dataclass
class _Expire:
    """Inbox item asking a worker to expire its silent devices (and, with ``status``, to republish every device's
    retained status, so counters are current even when nothing changes state)."""

    status: bool = False


@dataclass
class _Resume:
    """Inbox item after a reconnect: the node was cut off until ``wall`` (monotonic), so silence before it is not
    the devices' fault."""

    wall: float


@dataclass
class _Ack:
    """Inbox item: an operator acknowledged alarm ``alarm_type`` of ``device``."""

    device: str
    alarm_type: str


@dataclass
class _Previous:
    """Inbox item: the retained status ``device``'s previous owner left (read when this node took it up)."""

    device: str
    payload: bytes


@dataclass
class _Result:
    """Inbox item carrying an engine output back to the worker that owns the device."""

    request: InferenceRequest
    output: np.ndarray | None


class _Stop:
    """Inbox item: flush every stream, then leave."""


class _Handover:
    """Inbox item: the cluster's live nodes changed; flush and forget the devices this node no longer owns."""


#: Most chunks of one device an inbox joins into one item (1 s of 40 ms chunks): the most a worker processes in one
#: step for one device once it has fallen behind.
BLOCK_CHUNKS = 25


@dataclass
class _Chunks:
    """Inbox item: chunks of one device in arrival order, each ``(payload, content_type, arrival)`` (``arrival``:
    monotonic wall time it came in)."""

    device: str
    parts: list[tuple[bytes, str | None, float]]


class Inbox:
    """A worker's input: chunks bounded by ``capacity`` (the producer waits up to a timeout for room), results and
    control items unbounded (never dropped). FIFO across both, with two exceptions that keep the worker's per-chunk
    cost down:

    * **joining**: a chunk whose device already has a :class:`_Chunks` item waiting joins that item (up to ``block``
      chunks) when only chunks and engine results were queued after it;
    * **holding**: a :class:`_Chunks` item is handed out once it is ``hold_s`` old (from its first chunk's
      arrival), full (``block`` chunks), or the inbox holds half its capacity in chunks or any control item; until
      then the items behind it wait, except engine results, which may pass it (the first one queued goes first).

    A device's chunks stay in order and never pass a control item; passing an engine result of the same device is
    what a slower engine would have done anyway. ``hold_s = 0`` hands out every item at once (FIFO)."""

    def __init__(self, capacity: int, block: int = BLOCK_CHUNKS, hold_s: float = 0.0):
        self._items: deque[Any] = deque()
        self._chunks = 0
        self._results = 0  # _Result items queued
        self._controls = 0  # control items queued (neither chunks nor results)
        self._queued: dict[str, int] = {}  # chunks queued per device
        self._open: dict[str, _Chunks] = {}  # per device: its queued item later chunks may still join
        self._capacity = capacity
        self._block = block
        self._hold_s = float(hold_s)
        self._cond = threading.Condition()

    def put_chunk(self, device: str, part: tuple[bytes, str | None, float], timeout_s: float) -> bool:
        """Queue a chunk of ``device``; False when there was no room within ``timeout_s``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks < self._capacity, timeout_s):
                return False
            was_empty = not self._items
            item = self._open.get(device)
            if item is not None and len(item.parts) < self._block:
                item.parts.append(part)
            else:
                self._open[device] = item = _Chunks(device, [part])
                self._items.append(item)
            self._chunks += 1
            self._queued[device] = self._queued.get(device, 0) + 1
            # the worker waits for an item or for the held head item's time: only these change what it waits for
            if was_empty or (item is self._items[0] and len(item.parts) >= self._block) or self._half_full:
                self._cond.notify_all()
            return True

    def put(self, item: Any) -> None:
        """Queue a result or control item (never refused). Chunks queued after a control item come after it."""
        with self._cond:
            self._items.append(item)
            if isinstance(item, _Result):
                self._results += 1
            else:
                self._controls += 1
                self._open.clear()
            self._cond.notify_all()

    def get(self) -> Any:
        """The next item to handle (blocks until one is due, see the class docstring)."""
        with self._cond:
            while True:
                self._cond.wait_for(lambda: bool(self._items))
                index, wait_s = self._next_due()
                if index is not None:
                    break
                self._cond.wait(wait_s)
            item = self._items[index]
            del self._items[index]
            if isinstance(item, _Chunks):
                if self._open.get(item.device) is item:
                    del self._open[item.device]
                self._chunks -= len(item.parts)
                left = self._queued.pop(item.device) - len(item.parts)
                if left:
                    self._queued[item.device] = left
            elif isinstance(item, _Result):
                self._results -= 1
            else:
                self._controls -= 1
            self._cond.notify_all()
            return item

    @property
    def _half_full(self) -> bool:
        """At least half the capacity in chunks: nothing is held (the producer must never wait for the hold)."""
        return 2 * self._chunks >= self._capacity

    def _next_due(self) -> tuple[int | None, float]:
        """Index of the item to hand out now, or None and how long (s) until the held head item is due."""
        head = self._items[0]
        if not isinstance(head, _Chunks) or self._controls or self._half_full:
            return 0, 0.0
        wait_s = head.parts[0][2] + self._hold_s - time.monotonic()
        if wait_s <= 0 or len(head.parts) >= self._block:
            return 0, 0.0
        if self._results:
            for i, item in enumerate(self._items):
                if isinstance(item, _Result):
                    return i, 0.0
        return None, wait_s

    def queued(self, device: str) -> int:
        """Chunks of ``device`` waiting in this inbox (a device with a backlog is not silent)."""
        return self._queued.get(device, 0)

    @property
    def chunks(self) -> int:
        """Chunks waiting in this inbox."""
        return self._chunks

    def wait_empty(self, timeout_s: float) -> bool:
        """Block until nothing is queued; False after ``timeout_s``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._items, timeout_s)

    def __len__(self) -> int:
        """Items waiting (a :class:`_Chunks` item counts once)."""
        return len(self._items)


class NodeCounters:
    """Node-wide counters, updated from several threads under one lock (all monotonic)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.published = 0
        self.publish_dropped = 0
        self.beats_retired = 0  # beats of devices forgotten since start (so totals never go down)
        self.devices = 0  # device states held, all workers together
        self.rejected: dict[str, int] = {}

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def reject(self, code: str) -> int:
        with self._lock:
            self.rejected[code] = self.rejected.get(code, 0) + 1
            return self.rejected[code]

    def claim_device(self, cap: int) -> bool:
        """Take one of ``cap`` device slots (shared by all workers); False when all are taken."""
        with self._lock:
            if self.devices >= cap:
                return False
            self.devices += 1
            return True

    def release_device(self, beats: int) -> None:
        """A device's state was dropped: free its slot and keep its beats in the node's total."""
        with self._lock:
            self.devices -= 1
            self.beats_retired += beats


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
    seg, cls, beat = engines.get("segment"), engines.get("classify"), engines.get("beat-classify")
    plan = InferencePlan(
        fs_hz=INTERNAL_FS_HZ, seg=seg.manifest if seg else None, cls=cls.manifest if cls else None,
        beat=beat.manifest if beat else None, seg_leads=config.seg_leads, rhythm_hop_s=config.rhythm_hop_s,
        diagnosis_every_s=config.diagnosis_every_s,
    )
    return plan, engines


class EdgeApp:
    """One edge node. ``start()``, then ``stop()`` (also a context manager)."""

    def __init__(self, config: EdgeConfig):
        self.config = config
        self.compose()

    # ------------------------------------------------------------------ wiring
    def compose(self) -> None:
        """Build every part of the node and the queues between them (nothing runs until :meth:`start`).

        ingest (paho client, network thread) → ``workers`` inboxes (bounded chunks) → worker threads (own the
        DeviceStreams) → one BatchScheduler per engine (bounded) → results back to the inboxes → publisher (the same
        paho client: publish is thread-safe) ; plus the housekeeping / watchdog thread.
        """
        if self.config.cluster:  # failover: no session outlives the connection (a returning node must not be handed
            # the chunks its peers processed meanwhile, before it knows who owns them)
            self.config = dataclasses.replace(self.config, mqtt=dataclasses.replace(self.config.mqtt,
                                                                                    session_expiry_s=0))
        config = self.config
        self.started_wall = time.time()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        #: set when a thread of the node died: the node is no longer whole (``failure`` says which and why)
        self.failed = threading.Event()
        self.failure: str | None = None
        self.counters = NodeCounters()
        self._latency_s: deque[float] = deque(maxlen=5000)
        self._proc_ms: deque[float] = deque(maxlen=5000)
        self._rhythm_ms: deque[float] = deque(maxlen=5000)
        self._disconnected_since: float | None = None
        #: durations (s) of the broker outages this node lived through since it started (reported in health)
        self.outages: deque[float] = deque(maxlen=100)
        self.plan, self.engines = load_plan(config)
        self.schedulers = {
            task: BatchScheduler(engine, self._deliver, config.max_batch, config.max_wait_ms)
            for task, engine in self.engines.items()
        }
        self._streams: list[dict[str, DeviceStream]] = [{} for _ in range(config.workers)]
        #: per worker: devices taken up whose retained status is being read -> monotonic deadline of the read
        self._reading: list[dict[str, float]] = [{} for _ in range(config.workers)]
        self._inboxes = [Inbox(config.queue_size, hold_s=config.hold_ms / 1000.0) for _ in range(config.workers)]
        self._workers = [threading.Thread(target=self._work, args=(k,), name=f"edge-worker-{k}", daemon=True)
                         for k in range(config.workers)]
        self._housekeeper = threading.Thread(target=self._housekeeping, name="edge-housekeeping", daemon=True)
        self._stop = threading.Event()
        self._health_topic = proto.health_topic(config.node)
        #: live nodes and device owners in failover mode (a node silent for 3 health periods is gone)
        self.membership = (Membership(config.node, config.cluster, 3 * config.health_interval_s)
                           if config.cluster else None)
        will = (self._health_topic, self._offline())
        self.client = make_client(config.mqtt, "beatssl-edge", will=will, session_id=f"beatssl-edge-{config.node}")
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._unsubscribed = threading.Event()
        self.client.on_unsubscribe = self._on_unsubscribe
        #: message ids of the samples (un)subscription, told apart from the status reads' (set under the lock, so an
        #: acknowledgement cannot be judged before its id is known)
        self._ingest_mids: dict[str, int | None] = {"subscribe": None, "unsubscribe": None}
        self._mid_lock = threading.Lock()

    def threads(self) -> list[threading.Thread]:
        """Every thread the node runs (the watchdog's list)."""
        return [*self._workers, *(s.thread for s in self.schedulers.values()), self._housekeeper]

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> EdgeApp:
        """Compile the signal kernels (:mod:`edge.pipeline.warmup`: before the first chunk, not on it), start the
        threads, connect."""
        log.info("signal kernels ready in %.1f s", warm_up())
        for scheduler in self.schedulers.values():
            scheduler.start()
        for t in self._workers:
            t.start()
        self._housekeeper.start()
        m = self.config.mqtt
        self.client.connect_async(m.broker.host, m.broker.port, keepalive=m.keepalive_s, clean_start=False,
                                  properties=connect_properties(m))
        self.client.loop_start()
        return self

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Block until connected and subscribed to the samples topic; False after ``timeout_s``."""
        return self.subscribed.wait(timeout_s)

    def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Shut down in order: ingest → devices → schedulers → workers → publisher (see the module docstring);
        bounded by ``drain_timeout_s`` in all, even when a part is stuck or dead."""
        deadline = time.monotonic() + drain_timeout_s

        def left() -> float:
            return max(0.05, deadline - time.monotonic())

        if self.subscribed.is_set() and self.client.is_connected():
            # after the UNSUBACK no more chunks come: everything we acknowledged (PUBACK) is in an inbox
            with self._mid_lock:
                self._ingest_mids["unsubscribe"] = self.client.unsubscribe(self._subscription())[1]
            self._unsubscribed.wait(min(2.0, left()))
        self._stop.set()
        for inbox in self._inboxes:
            inbox.put(_Stop())   # each worker: process its inbox, flush every stream, submit the last windows
        for inbox in self._inboxes:
            inbox.wait_empty(left())
        for scheduler in self.schedulers.values():
            scheduler.drain(left())  # results go back to the workers, which are still running
        for inbox in self._inboxes:
            inbox.wait_empty(left())
            inbox.put(None)
        for t in self._workers:
            t.join(left())
        for scheduler in self.schedulers.values():
            scheduler.stop(left())
        self._housekeeper.join(left())
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

    # ------------------------------------------------------------------ ingest (network thread)
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the connection: %s", self.config.mqtt.broker, reason_code)
            return
        # failover: health first, so the peers' retained health (sent right after the SUBACK) is known before any
        # chunk is judged by its owner
        health = [(proto.HEALTH_SUBSCRIPTION, 1)] if self.membership is not None else []
        self._ingest_mids["subscribe"] = client.subscribe([*health, (self._subscription(), 1),
                                                           (proto.ALARM_ACK_SUBSCRIPTION, 1)])[1]
        if self._disconnected_since is not None:
            outage = time.monotonic() - self._disconnected_since
            log.warning("broker %s is back after %.1f s", self.config.mqtt.broker, outage)
            self._disconnected_since = None
            self.outages.append(round(outage, 1))
            for inbox in self._inboxes:
                inbox.put(_Resume(time.monotonic()))
        self._publish(self._health_topic, proto.dumps(self.health("online")), retain=True)
        log.info("connected to %s", self.config.mqtt.broker)
        self.connected.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, *_: Any) -> None:
        if mid == self._ingest_mids["subscribe"]:  # not the SUBACK of a status read
            self.subscribed.set()

    def _on_unsubscribe(self, client: paho.Client, userdata: Any, mid: int, *_: Any) -> None:
        with self._mid_lock:
            if mid == self._ingest_mids["unsubscribe"]:
                self._unsubscribed.set()

    def _subscription(self) -> str:
        group = self.config.shared_group
        return proto.shared_samples_subscription(group) if group else proto.SAMPLES_SUBSCRIPTION

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connected.clear()
        if not self._stop.is_set():
            self._disconnected_since = time.monotonic()
            log.warning("lost the broker %s (%s); reconnecting", self.config.mqtt.broker, reason_code)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if self.membership is not None:
            node = proto.node_from_health_topic(message.topic)
            if node is not None:
                self._on_health(node, message)
                return
        device = proto.device_from_topic(message.topic)
        if device is None or not proto.valid_device_id(device):
            self._reject("bad_device_id", f"topic {message.topic[:80]!r} has no valid device id")
            return
        if self.config.partition is not None:
            k, n = self.config.partition
            if proto.device_hash(device) % n != k:
                return
        if self.membership is not None and self.membership.owner(device) != self.config.node:
            return
        if proto.is_status(message.topic):  # a status read: only the stored message counts, not live ones
            if message.retain:
                self._inbox(device).put(_Previous(device, message.payload))
            return
        if proto.is_alarm_ack(message.topic):
            self._on_ack(device, message.payload)
            return
        props = getattr(message, "properties", None)
        content_type = getattr(props, "ContentType", None) if props is not None else None
        part = (message.payload, content_type, time.monotonic())
        if not self._inbox(device).put_chunk(device, part, self.config.enqueue_timeout_s):
            self._reject("overload", f"worker queue full; chunk of {device} dropped")

    def _on_health(self, node: str, message: paho.MQTTMessage) -> None:
        """A peer's health (failover): a change of the live nodes is handed to every worker."""
        try:
            health = json.loads(message.payload)
        except ValueError:
            health = {}  # an emptied or broken retained message: that node is not live
        if self.membership.observe(node, health if isinstance(health, dict) else {}, retained=bool(message.retain)):
            self._handover()

    def _handover(self) -> None:
        log.info("cluster %s: live nodes %s", self.config.cluster, ", ".join(self.membership.live()))
        for inbox in self._inboxes:
            inbox.put(_Handover())

    def _on_ack(self, device: str, payload: bytes) -> None:
        try:
            alarm_type = proto.decode_alarm_ack(payload)
        except proto.ProtocolError as exc:
            self._reject(exc.code, f"alarm acknowledgement for {device}: {exc}")
            return
        self._inbox(device).put(_Ack(device, alarm_type))

    def _inbox(self, device: str) -> Inbox:
        return self._inboxes[proto.device_hash(device) % self.config.workers]

    # ------------------------------------------------------------------ workers
    def _work(self, k: int) -> None:
        streams = self._streams[k]
        inbox = self._inboxes[k]
        reading = self._reading[k]
        leaving: set[str] = set()  # handed over to another node: flushed, forgotten once no engine result is due
        flushed = False
        try:
            while True:
                item = inbox.get()
                if item is None:
                    return
                if isinstance(item, _Stop):
                    flushed = True
                    for device in list(streams):
                        self._guarded(streams, device, lambda s: s.flush())
                elif isinstance(item, _Handover):
                    self._hand_over(streams, leaving, reading)
                elif isinstance(item, _Previous):
                    if reading.pop(item.device, None) is not None:
                        self.client.unsubscribe(proto.status_topic(item.device))
                        if item.device in streams:
                            self._guarded(streams, item.device, lambda s, p=item.payload: s.previous_status(p))
                elif isinstance(item, _Expire):
                    self._forget_left(streams, leaving)
                    self._expire(streams, inbox)
                    self._give_up_reads(reading)
                    if item.status:
                        due = time.monotonic() - self.config.health_interval_s
                        for device, stream in streams.items():
                            # the new owner's status is the device's now; a device whose beats just said how far
                            # it got needs no repeat
                            if device not in leaving and stream.status_wall <= due:
                                self._emit(device, [stream.status_output()])
                elif isinstance(item, _Resume):
                    for stream in streams.values():
                        stream.last_arrival = max(stream.last_arrival, item.wall)
                elif isinstance(item, _Ack):
                    if item.device in streams:
                        self._guarded(streams, item.device, lambda s, a=item.alarm_type: s.acknowledge(a))
                elif isinstance(item, _Result):
                    if item.request.device in streams:
                        self._guarded(streams, item.request.device,
                                      lambda s, r=item: s.on_result(r.request, r.output))
                        if item.request.device in leaving:
                            self._forget_left(streams, leaving)
                elif flushed:  # came after the UNSUBACK wait ran out: the streams are flushed, say so
                    for _ in item.parts:
                        self._reject("shutting_down", f"chunk of {item.device} came after the shutdown flush; dropped")
                else:
                    self._ingest(streams, reading, item)
        except BaseException as exc:
            self._die(f"worker {k} died: {type(exc).__name__}: {exc}")
            raise

    def _hand_over(self, streams: dict[str, DeviceStream], leaving: set[str], reading: dict[str, float]) -> None:
        """The handover step of a membership change: every device now owned by another node is flushed (its beats
        in the look-ahead go out, engine results still due are taken), gets a ``moved`` status naming the new owner
        (not retained: the retained status is the new owner's) and is forgotten once idle."""
        for device in list(streams):
            owner = self.membership.owner(device)
            if owner == self.config.node:
                if device in leaving:  # came back before it was forgotten: its next chunk starts a new run
                    leaving.discard(device)
                    self._take_up(streams[device], reading)
            elif device not in leaving:
                leaving.add(device)
                self._guarded(streams, device, lambda s, o=owner: self._move(s, o))
        self._forget_left(streams, leaving)

    @staticmethod
    def _move(stream: DeviceStream, owner: str) -> list[Output]:
        outputs = [out for out in stream.flush() if out.kind != "status"]
        return [*outputs, Output("status", {**stream.status(), "state": "moved", "to": owner})]

    def _forget_left(self, streams: dict[str, DeviceStream], leaving: set[str]) -> None:
        for device in [d for d in leaving if d in streams and streams[d].idle]:
            self.counters.release_device(streams.pop(device).counters.beats)
            leaving.discard(device)

    def _ingest(self, streams: dict[str, DeviceStream], reading: dict[str, float], item: _Chunks) -> None:
        device = item.device
        if device not in streams:
            if not self.counters.claim_device(self.config.max_devices):
                for _ in item.parts:
                    self._reject("device_cap", f"{self.config.max_devices} devices held; chunk of new device "
                                               f"{device} dropped")
                return
            streams[device] = self._new_stream(device)
            self._take_up(streams[device], reading)
        chunks = []
        for payload, content_type, arrival in item.parts:
            try:
                chunks.append((proto.decode_samples(payload, self.config.limits, content_type), arrival))
            except proto.ProtocolError as exc:
                self._emit(device, streams[device].error(exc.code, str(exc)))
        if chunks:
            self._guarded(streams, device, lambda s: s.push_many(chunks))

    def _guarded(self, streams: dict[str, DeviceStream], device: str,
                 step: Callable[[DeviceStream], list[Output]]) -> None:
        """Run one step of one device's work; any exception is that device's alone: it is reported (``internal``),
        its stream restarts, and the worker goes on with the other devices."""
        stream = streams[device]
        try:
            outputs = step(stream)
            self._submit(stream)
        except Exception as exc:  # noqa: BLE001 - one device's failure must not stop the others
            log.exception("device %s: internal error", device)
            counters, resume = stream.counters, stream.resume
            streams[device] = stream = self._new_stream(device)
            stream.counters, stream.resume = counters, resume
            outputs = stream.error("internal", f"{type(exc).__name__}: {exc}; stream restarted")
        self._emit(device, outputs)

    def _new_stream(self, device: str) -> DeviceStream:
        limits = self.config.device_alarm_limits.get(device, self.config.alarm_limits)
        return DeviceStream(device, self.config.stream, self.plan, limits, node=self.config.node)

    def _take_up(self, stream: DeviceStream, reading: dict[str, float]) -> None:
        """This node takes a device up: read the retained status its previous owner left (the broker sends the stored
        message on subscribing, before any status this node publishes after the SUBSCRIBE), so that the stream can
        state the gap of its resume."""
        stream.take_up()
        reading[stream.device_id] = time.monotonic() + STATUS_READ_S
        self.client.subscribe(proto.status_topic(stream.device_id), qos=1)

    def _give_up_reads(self, reading: dict[str, float]) -> None:
        """Stop reading the status of devices that had none stored (new to the broker): nothing will come."""
        now = time.monotonic()
        for device in [d for d, deadline in reading.items() if now > deadline]:
            del reading[device]
            self.client.unsubscribe(proto.status_topic(device))

    def _submit(self, stream: DeviceStream) -> None:
        for request in stream.take_requests():
            scheduler = self.schedulers[REQUEST_TASK[request.kind]]
            if not scheduler.submit(request):
                self._emit(stream.device_id, stream.on_result(request, None))

    def _deliver(self, request: InferenceRequest, output: np.ndarray | None) -> None:
        """Scheduler thread → the worker that owns the device (results are never dropped)."""
        self._inbox(request.device).put(_Result(request, output))

    def _expire(self, streams: dict[str, DeviceStream], inbox: Inbox) -> None:
        now = time.monotonic()
        for device, stream in list(streams.items()):
            if inbox.queued(device):
                continue  # its chunks are still queued behind this check: the device is not silent
            idle = now - stream.last_arrival
            if idle > self.config.forget_after_s and stream.idle:
                self.counters.release_device(stream.counters.beats)
                del streams[device]
            elif idle > self.config.stale_after_s and stream.state != "stale":
                self._guarded(streams, device, lambda s: s.flush())

    def _emit(self, device: str, outputs: list[Output]) -> None:
        for out in outputs:
            if out.kind == "beats":
                self._latency_s.append(out.payload["latency_s"])
                self._proc_ms.append(out.payload["proc_ms"])
            elif out.kind == "rhythm":
                self._rhythm_ms.append(out.payload["proc_ms"])
            self._publish(OUTPUT_TOPICS[out.kind](device), proto.dumps(out.payload), retain=out.retain)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        self.counters.add("publish_dropped" if info.rc == paho.MQTT_ERR_QUEUE_SIZE else "published")

    def _reject(self, code: str, message: str) -> None:
        count = self.counters.reject(code)
        if count in (1, 10, 100, 1000) or count % 10000 == 0:
            log.warning("%s (%d so far)", message, count)
            payload = {"v": proto.PROTOCOL_VERSION, "code": code, "message": message, "count": count}
            self._publish(proto.node_errors_topic(self.config.node), proto.dumps(payload))

    # ------------------------------------------------------------------ housekeeping + watchdog
    def _housekeeping(self) -> None:
        next_health = time.monotonic() + self.config.health_interval_s
        try:
            while not self._stop.wait(1.0):
                self._watch()
                if self.membership is not None and self.membership.expire():
                    self._handover()
                if not self.connected.is_set():
                    continue  # a node cut off from its broker hears nothing: that silence is not the devices'
                due = time.monotonic() >= next_health
                for inbox in self._inboxes:
                    if len(inbox) < self.config.queue_size:
                        inbox.put(_Expire(status=due))
                if due:
                    self._publish(self._health_topic, proto.dumps(self.health(self.state)), retain=True)
                    next_health = time.monotonic() + self.config.health_interval_s
        except BaseException as exc:
            self._die(f"housekeeping died: {type(exc).__name__}: {exc}")
            raise

    def _watch(self) -> None:
        """The watchdog: a dead worker or scheduler thread makes the node failed (never a silent half-node)."""
        dead = [t.name for t in self.threads() if t.ident is not None and not t.is_alive()]
        if dead and not self.failed.is_set():
            self._die(f"thread(s) {', '.join(dead)} died")

    def _die(self, reason: str) -> None:
        if self.failed.is_set():
            return
        self.failure = reason
        self.failed.set()
        log.error("node failed: %s", reason)
        self._publish(self._health_topic, proto.dumps(self.health("failed")), retain=True)

    @property
    def rejected(self) -> dict[str, int]:
        """Chunks refused before reaching a device stream, by code (a copy)."""
        return dict(self.counters.rejected)

    @property
    def state(self) -> str:
        """``online``, or ``failed`` once a thread died."""
        return "failed" if self.failed.is_set() else "online"

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

        c = self.counters
        return {
            "v": proto.PROTOCOL_VERSION,
            "node": self.config.node,
            "state": state,
            "failure": self.failure,
            "uptime_s": round(time.time() - self.started_wall, 1),
            "devices": len(devices),
            "devices_online": sum(s.state == "online" for s in devices.values()),
            "beats": c.beats_retired + sum(s.counters.beats for s in devices.values()),
            "published": c.published,
            "publish_dropped": c.publish_dropped,
            "rejected": dict(c.rejected),
            "queue_depth": sum(inbox.chunks for inbox in self._inboxes),
            "broker_outages": len(self.outages),
            "last_outage_s": self.outages[-1] if self.outages else None,
            "detection_latency_s": pct(lat),
            "processing_ms": pct(proc),
            "rhythm_processing_ms": pct(rhythm),
            "partition": list(self.config.partition) if self.config.partition else None,
            "cluster": self.config.cluster,
            "live_nodes": list(self.membership.live()) if self.membership is not None else None,
            "wall_time": round(time.time(), 3),
            "engines": {
                task: {"name": e.manifest.name, "backend": e.backend.name, **self.schedulers[task].stats.summary()}
                for task, e in self.engines.items()
            },
        }

    def _offline(self) -> bytes:
        return proto.dumps({"v": proto.PROTOCOL_VERSION, "node": self.config.node, "state": "offline"})
