"""Replay records over MQTT as many virtual devices, paced against one monotonic clock.

One thread drives every device. Each device has its own record (records are assigned round-robin) and publishes it
in chunks of ``chunk_ms`` on ``ecg/<device>/samples`` (QoS 1): chunk ``seq`` (0, 1, 2 …) holds the samples from
device time ``t0`` on and is due once it has been "acquired", at wall time
``start + (stagger + t0 + chunk duration) / speed``. Due times come from sample counts, never from accumulated
sleeps, so pacing does not drift; devices are staggered by a fraction of a chunk so their messages interleave.
Before the first chunk of every pass over a record the record's reference annotations go out on
``sim/<device>/truth`` (:mod:`simulator.truth`).

Looping without a false beat: gluing a record's end to its start puts an arbitrary cut into the signal (a 10 s
record looped that way gave an RR 0.768 s beat at every seam). A looped record is therefore cut between beats: the
first pass plays samples ``[0, end)`` and every later pass ``[first, end)``, where ``first`` and ``end`` lie halfway
between the first two and the last two reference beats (:func:`loop_seams`; the edge's own detector finds the beats
of a record without annotations). The RR across a seam is then the mean of the record's first and last RR, the
stream stays contiguous (``seq`` and ``t0`` continue; no time jump, no detector restart, no silence the edge could
read as a pause), and the last :data:`SEAM_RAMP_S` before ``end`` are shifted linearly onto the level at ``first``,
so the baseline has no step. Each pass's truth message carries that ``span``.

Memory stays bounded: at most ``max_in_flight`` QoS 1 messages are unacknowledged while the broker is connected
(publishing waits for acknowledgements); while it is away, a finite-speed replay keeps producing like a real device
and paho holds at most ``MqttSettings.max_queued`` messages, the rest are counted as ``dropped``. At ``speed=inf``
the replay waits for the broker to come back instead. paho reconnects on its own.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import paho.mqtt.client as paho

from edge import protocol as proto
from edge.detection.beats import detect_record
from edge.ecg import preferred_lead
from edge.transport.mqtt import MqttSettings, connect_properties, make_client, publish_properties
from offline.records import RecordError, read_record
from simulator.sources import ReplaySource
from simulator.truth import Truth, load_truth

log = logging.getLogger(__name__)

#: Payload encodings of ``ecg/<device>/samples`` (see edge/protocol/payloads.py).
FORMATS: tuple[str, ...] = ("json", "binary")
#: How device ids are made: ``<prefix>-000`` … or ``<prefix>-<record name>``.
DEVICE_NAMINGS: tuple[str, ...] = ("index", "record")
#: Seconds to wait for the broker's CONNACK, and for outstanding acknowledgements when a replay ends.
CONNECT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 10.0
#: Length (s) of the baseline ramp that joins a looped record's end to its loop start.
SEAM_RAMP_S = 0.1
#: chunks due within this much of now go out together, without a sleep between them (so at most this early): one
#: wake-up per 2 ms instead of one per chunk — 100 devices × 25 chunks/s cost 0.5 core in wake-ups alone.
SCHEDULE_SLACK_S = 0.002


class ReplayError(RuntimeError):
    """A replay that cannot start (bad parameters, unreadable record, unreachable broker); one-line message."""


@dataclass
class ReplaySummary:
    """What a replay did (also the progress snapshot while it runs).

    Attributes:
        devices: virtual devices.
        chunks: sample messages published.
        samples: samples (per lead) published, all devices.
        bytes: payload bytes published (samples and truth).
        truth_messages: truth messages published.
        dropped: messages refused because the outgoing queue was full (broker away too long).
        reconnects: connections re-established after a loss.
        unacked: QoS 1 messages still unacknowledged when the replay ended.
        device_seconds: device time replayed, mean over devices (s).
        elapsed_s: wall time since the first chunk was due (s).
        max_lag_s: latest any chunk went out after its due time (s); 0 at ``speed=inf``.
    """

    devices: int
    chunks: int = 0
    samples: int = 0
    bytes: int = 0
    truth_messages: int = 0
    dropped: int = 0
    reconnects: int = 0
    unacked: int = 0
    device_seconds: float = 0.0
    elapsed_s: float = 0.0
    max_lag_s: float = 0.0

    @property
    def speed(self) -> float:
        """Achieved speed: device seconds per wall second (1 = real time)."""
        return self.device_seconds / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, float | int]:
        """JSON-ready summary (times rounded to 0.1 ms), with the achieved ``speed``."""
        out = {k: round(v, 4) if isinstance(v, float) else v for k, v in dataclasses.asdict(self).items()}
        return {**out, "speed": round(self.speed, 3)}


@dataclass
class _Device:
    """One virtual device's state: its record and where it is in it."""

    device_id: str
    truth: Truth
    signal_mv: np.ndarray
    chunk: int                # samples per chunk
    stagger_s: float          # start offset on the schedule (device s)
    limit: int | None         # stop after this many samples (duration_s), or None
    loop_from: int = 0        # first sample of the passes after the first (the loop seam)
    seq: int = 0
    pos: int = 0              # next sample of the record
    emitted: int = 0          # samples published so far (device clock = emitted / fs)
    passes: int = 0           # completed passes over the record

    @property
    def fs_hz(self) -> float:
        return self.truth.fs_hz

    def next_size(self, loop: bool) -> int:
        """Samples in the next chunk (0: the device is done)."""
        left = len(self.signal_mv) - self.pos
        if left == 0 and loop:
            left = len(self.signal_mv) - self.loop_from
        n = min(self.chunk, left)
        return n if self.limit is None else min(n, self.limit - self.emitted)

    def due_s(self, n: int) -> float:
        """Device time (s, including the stagger) at which a chunk of ``n`` samples is complete."""
        return self.stagger_s + (self.emitted + n) / self.fs_hz


class Replayer:
    """Publishes records as virtual devices over MQTT.

    Args:
        records: records to replay; device ``i`` plays ``records[i % len(records)]``.
        settings: broker connection (MQTT 5 sessions also get a content-type property on every message).
        devices: number of virtual devices.
        speed: 1.0 = real time, k = k× faster, ``math.inf`` = as fast as the broker acknowledges.
        chunk_ms: chunk length (ms of signal), rounded to whole samples of each record.
        loop: start a record over at its end (``seq`` and the device clock keep increasing).
        fmt: ``"json"`` (mV, 4 decimals) or ``"binary"`` (int16 at 200 adu/mV).
        leads: leads to send, in this order (any spelling), or None for all leads of each record.
        device_prefix: first part of the device ids.
        device_names: ``"index"`` (``<prefix>-000``, ``<prefix>-001`` …) or ``"record"`` (``<prefix>-<record>``,
            ``-2``, ``-3`` … appended when a record plays on several devices).
        max_in_flight: most unacknowledged QoS 1 messages while connected before publishing waits.
    """

    def __init__(
        self,
        records: Sequence[ReplaySource],
        settings: MqttSettings,
        devices: int = 1,
        speed: float = 1.0,
        chunk_ms: float = 40.0,
        loop: bool = False,
        fmt: str = "json",
        leads: Sequence[str] | None = None,
        device_prefix: str = "sim",
        device_names: str = "index",
        max_in_flight: int = 1000,
    ):
        if not records:
            raise ReplayError("no records to replay")
        if devices < 1:
            raise ReplayError(f"devices must be at least 1, not {devices}")
        if not speed > 0:
            raise ReplayError(f"speed must be > 0 (1 = real time), not {speed}")
        if not 1 <= chunk_ms <= 10_000:
            raise ReplayError(f"chunk length must be 1..10000 ms, not {chunk_ms}")
        if fmt not in FORMATS:
            raise ReplayError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        if device_names not in DEVICE_NAMINGS:
            raise ReplayError(f"device naming must be one of {', '.join(DEVICE_NAMINGS)}, not {device_names!r}")
        if max_in_flight < 1:
            raise ReplayError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.records = list(records)
        self.settings = settings
        self.speed = float(speed)
        self.chunk_ms = float(chunk_ms)
        self.loop = loop
        self.fmt = fmt
        self.leads = tuple(leads) if leads else None
        self.max_in_flight = max_in_flight
        self.device_ids = _device_ids(self.records, devices, device_prefix, device_names)
        self._summary = ReplaySummary(devices)
        self._devices: list[_Device] = []
        self._start = 0.0
        self._end: float | None = None
        self._cond = threading.Condition()
        self._pending = 0          # published, not yet acknowledged (guarded by _cond)
        self._connected = False    # guarded by _cond
        self._connects = 0

    # ------------------------------------------------------------------------------------------ public
    def run(self, stop_event: threading.Event | None = None, duration_s: float | None = None) -> ReplaySummary:
        """Replay until every device has finished its record (no loop), ``duration_s``, or ``stop_event``.

        Args:
            stop_event: set it (from any thread) to stop; Ctrl-C in the calling thread stops too.
            duration_s: stop each device after this much device time (s); None = the whole record (or forever
                with ``loop``).

        Returns:
            the summary; every message was handed to the broker and acknowledged unless ``unacked`` > 0.

        Raises:
            ReplayError: a record cannot be read or lacks a requested lead; the broker is unreachable or refuses
                the connection.
        """
        if duration_s is not None and not duration_s > 0:
            raise ReplayError(f"duration must be > 0 s, not {duration_s}")
        stop = stop_event or threading.Event()
        self._devices = self._load(duration_s)
        self._pending, self._connected, self._connects = 0, False, 0
        client = self._connect()
        self._summary = ReplaySummary(len(self._devices))
        self._start = time.monotonic()
        self._end = None
        try:
            self._publish_all(client, stop)
        except KeyboardInterrupt:
            log.info("replay interrupted")
        finally:
            self._flush()
            self._end = time.monotonic()
            client.disconnect()
            client.loop_stop()
        return self.snapshot()

    def snapshot(self) -> ReplaySummary:
        """A copy of the counters so far (safe to call from another thread while :meth:`run` runs)."""
        snap = dataclasses.replace(self._summary)
        if self._devices:
            snap.device_seconds = sum(d.emitted / d.fs_hz for d in self._devices) / len(self._devices)
            snap.elapsed_s = (self._end or time.monotonic()) - self._start
        with self._cond:
            snap.unacked = max(0, self._pending)
        snap.reconnects = max(0, self._connects - 1)
        return snap

    # ------------------------------------------------------------------------------------------ set-up
    def _load(self, duration_s: float | None) -> list[_Device]:
        """Read each record that some device plays (once) and build the devices."""
        loaded: dict[int, tuple[np.ndarray, Truth]] = {}
        devices = []
        n = len(self.device_ids)
        for i, device_id in enumerate(self.device_ids):
            k = i % len(self.records)
            if k not in loaded:
                source = self.records[k]
                try:
                    record = read_record(source.path, leads=self.leads)
                    truth = load_truth(source, record)
                except RecordError as exc:
                    raise ReplayError(str(exc)) from None
                loaded[k] = (record.signal_mv, truth, 0)
                if self.loop:
                    first, end = loop_seams(record_beats(record.signal_mv, truth), record.n_samples)
                    loaded[k] = (joined_at_seam(record.signal_mv, first, end, truth.fs_hz), truth, first)
            signal, truth, loop_from = loaded[k]
            chunk = max(1, round(self.chunk_ms * truth.fs_hz / 1000.0))
            limit = None if duration_s is None else round(duration_s * truth.fs_hz)
            devices.append(_Device(device_id, truth, signal, chunk, stagger_s=i / n * chunk / truth.fs_hz,
                                   limit=limit, loop_from=loop_from))
        return devices

    def _connect(self) -> paho.Client:
        client = make_client(self.settings, "beatssl-sim")
        refused: list[str] = []
        first = threading.Event()

        def on_connect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
            if getattr(reason, "is_failure", False):
                refused.append(str(reason))
            else:
                with self._cond:
                    self._connected = True
                    self._cond.notify_all()
                self._connects += 1
                if self._connects > 1:
                    log.warning("reconnected to the broker at %s", self.settings.broker)
            first.set()

        def on_disconnect(c: paho.Client, userdata: object, flags: object, reason: object, props: object) -> None:
            with self._cond:
                self._connected = False
            if getattr(reason, "value", 0) != 0:  # not our own disconnect()
                log.warning("lost the broker at %s (%s); reconnecting", self.settings.broker, reason)

        def on_publish(c: paho.Client, userdata: object, mid: int, reason: object, props: object) -> None:
            with self._cond:
                self._pending -= 1
                if self._pending <= self.max_in_flight // 2:
                    self._cond.notify_all()

        client.on_connect = on_connect
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        broker = self.settings.broker
        try:
            client.connect(broker.host, broker.port, keepalive=self.settings.keepalive_s,
                           properties=connect_properties(self.settings))
        except (OSError, ValueError) as exc:
            raise ReplayError(f"cannot reach the MQTT broker at {broker}: {exc}") from None
        client.loop_start()
        if not first.wait(CONNECT_TIMEOUT_S) or refused:
            client.loop_stop()
            why = refused[0] if refused else f"no answer within {CONNECT_TIMEOUT_S:.0f} s"
            raise ReplayError(f"the MQTT broker at {broker} refused the connection: {why}")
        return client

    # ------------------------------------------------------------------------------------------ the loop
    def _publish_all(self, client: paho.Client, stop: threading.Event) -> None:
        props = {
            "json": publish_properties(self.settings, proto.CONTENT_TYPE_JSON),
            "binary": publish_properties(self.settings, proto.CONTENT_TYPE_BINARY),
        }
        heap = []
        for i, dev in enumerate(self._devices):
            n = dev.next_size(self.loop)
            if n:
                heap.append((dev.due_s(n), i))
        heapq.heapify(heap)
        finite = math.isfinite(self.speed)
        summary = self._summary
        while heap and not stop.is_set():
            due_s, i = heapq.heappop(heap)
            dev = self._devices[i]
            if finite:
                wall_due = self._start + due_s / self.speed
                wait = wall_due - time.monotonic()
                if wait > SCHEDULE_SLACK_S and stop.wait(wait):
                    break
                summary.max_lag_s = max(summary.max_lag_s, -wait)
            if dev.pos == len(dev.signal_mv):  # loop: start the record over at its seam
                dev.pos = dev.loop_from
                dev.passes += 1
            if dev.emitted == 0 or dev.pos == dev.loop_from:
                t0_s = (dev.emitted - dev.pos) / dev.fs_hz  # device time of the record's sample 0 in this pass
                truth = dev.truth.message(dev.device_id, t0_s, dev.passes, span=(dev.pos, len(dev.signal_mv)))
                self._publish(client, proto.truth_topic(dev.device_id), proto.dumps(truth), props["json"], stop)
                summary.truth_messages += 1
            n = dev.next_size(self.loop)
            data = dev.signal_mv[dev.pos:dev.pos + n]
            msg = proto.SamplesMessage(dev.seq, dev.fs_hz, dev.truth.leads, dev.emitted / dev.fs_hz, data)
            payload = proto.encode_samples_binary(msg) if self.fmt == "binary" else proto.encode_samples_json(msg)
            self._publish(client, proto.samples_topic(dev.device_id), payload, props[self.fmt], stop)
            dev.seq += 1
            dev.pos += n
            dev.emitted += n
            summary.chunks += 1
            summary.samples += n
            n_next = dev.next_size(self.loop)
            if n_next:
                heapq.heappush(heap, (dev.due_s(n_next), i))

    def _publish(self, client: paho.Client, topic: str, payload: bytes, props: object, stop: threading.Event) -> None:
        """Publish at QoS 1 once there is room in the in-flight window; count drops by a full paho queue."""
        with self._cond:
            if self._pending >= self.max_in_flight:  # full: wait until half of the window is acknowledged
                while (self._pending > self.max_in_flight // 2 and not stop.is_set()
                       and (self._connected or not math.isfinite(self.speed))):
                    self._cond.wait(0.1)
            self._pending += 1
        info = client.publish(topic, payload, qos=1, properties=props)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            with self._cond:
                self._pending -= 1
            self._summary.dropped += 1
        else:
            self._summary.bytes += len(payload)

    def _flush(self) -> None:
        """Wait (bounded) until the broker acknowledged everything published."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        with self._cond:
            while self._pending > 0 and time.monotonic() < deadline:
                self._cond.wait(0.1)
        if self._pending > 0:
            log.warning("%d messages not acknowledged by the broker after %.0f s", self._pending, FLUSH_TIMEOUT_S)


def record_beats(signal_mv: np.ndarray, truth: Truth) -> np.ndarray:
    """R positions (samples) of a record: its reference beats (:meth:`Truth.reference_beats`), else those the edge's
    detector (:func:`edge.detection.beats.detect_record`) finds on the preferred lead of ``signal_mv``."""
    beats = truth.reference_beats()
    if beats.size:
        return beats
    lead = preferred_lead(truth.leads)
    return np.array([b.sample for b in detect_record(signal_mv[:, lead], truth.fs_hz)], dtype=np.int64)


def loop_seams(beat_samples: np.ndarray, n_samples: int) -> tuple[int, int]:
    """``(first, end)`` samples of a looped record: halfway between its first two and its last two beats, so that
    playing ``[first, end)`` after ``[0, end)`` puts an RR of ``(RR_first + RR_last) / 2`` across the seam.
    With fewer than 4 beats the whole record ``(0, n_samples)`` loops."""
    b = np.sort(np.asarray(beat_samples, dtype=np.int64))
    b = b[(b >= 0) & (b < n_samples)]
    if b.size < 4:
        return 0, n_samples
    return int((b[0] + b[1]) // 2), int((b[-2] + b[-1]) // 2)


def joined_at_seam(signal_mv: np.ndarray, first: int, end: int, fs_hz: float) -> np.ndarray:
    """``signal_mv[:end]`` (``(n, leads)`` mV) with its last :data:`SEAM_RAMP_S` shifted linearly, per lead, from
    0 to the step ``signal[first] - signal[end]``, so that sample ``first`` continues it without a baseline step."""
    out = np.array(signal_mv[:end], dtype=np.float32)
    if first == 0 and end == len(signal_mv):
        return out
    n = min(max(1, round(SEAM_RAMP_S * fs_hz)), end - first)
    step = signal_mv[first] - signal_mv[min(end, len(signal_mv) - 1)]
    out[end - n:] += (np.arange(1, n + 1, dtype=np.float32) / n)[:, None] * step[None, :]
    return out


def _device_ids(records: Sequence[ReplaySource], devices: int, prefix: str, naming: str) -> list[str]:
    """Device ids for ``devices`` devices playing ``records`` round-robin; ReplayError when one is not topic-safe."""
    if naming == "index":
        ids = [f"{prefix}-{i:03d}" for i in range(devices)]
    else:
        ids = []
        for i in range(devices):
            copy = i // len(records)
            ids.append(f"{prefix}-{records[i % len(records)].name}" + (f"-{copy + 1}" if copy else ""))
    bad = [d for d in ids if not proto.valid_device_id(d)]
    if bad:
        raise ReplayError(f"device id {bad[0]!r} is not 1-64 characters of [A-Za-z0-9_.:@-] (check the prefix)")
    if len(set(ids)) != len(ids):
        raise ReplayError("two devices would share an id (records with the same name?); use index naming")
    return ids
