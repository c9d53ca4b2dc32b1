"""Every core of a box: ``beatssl-edge run --processes N`` runs N edge worker processes under one supervisor.

Each worker is a whole edge (``python -m beatssl.cli run … --processes 1 --node <node>.w<k>``: its own engines, its
own batch scheduler, its own GIL) handling share ``k/N`` of the devices (``--partition k/N``, the stable CRC-32 hash
of the device id), or, with ``--failover``, its rendezvous share among every live node of the cluster. Workers are
subprocesses, never forks: a process with threads (paho, ONNX Runtime) must not fork.

The supervisor:

* subscribes to its workers' retained health topics and publishes their sum, retained, on
  ``beatssl/edge/<node>/health`` every health period (its own Last Will says ``offline``): ``online`` when every
  worker is online, else ``degraded``; ``workers`` lists each one's state, pid, restarts and last exit code;
* restarts a worker that exits while the node is not stopping (after 1 s, doubling to 30 s while it keeps dying
  within a minute of its start). The restarted worker takes its persistent MQTT session back (the same client id
  ``beatssl-edge-<node>.w<k>``), so the broker hands it the chunks that arrived meanwhile and its devices resume on
  the device clock; what the dead worker had taken but not processed is the gap its devices' streams show. A worker
  that exits 2 (a usage error: it would fail the same way again) stops the node;
* on SIGTERM forwards SIGTERM to every worker (each flushes its detectors and waits for its PUBACKs), waits for them,
  publishes ``offline`` and exits 0 when every worker exited 0.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import typer

from edge import protocol as proto
from edge.transport.mqtt import MqttSettings, make_client

log = logging.getLogger(__name__)

#: counters of the workers' health messages that the node's health sums
SUMMED = ("devices", "devices_online", "beats", "published", "publish_dropped", "queue_depth")
USAGE_EXIT = 2


def worker_node(node: str, k: int) -> str:
    """Node name of worker ``k`` of ``node`` (its own health topic and MQTT session)."""
    return f"{node}.w{k}"


def command_args(ctx: typer.Context, skip: Sequence[str]) -> list[str]:
    """The options of a parsed command as command-line arguments (every value explicit, so a worker started with
    them sees what its supervisor saw, whatever came from the environment or a config file). ``skip``: parameter
    names left out."""
    args: list[str] = []
    for param in ctx.command.params:
        if param.param_type_name != "option" or param.name in skip:
            continue
        value = ctx.params.get(param.name)
        if value is None:
            continue
        if param.is_flag:
            if value:
                args.append(param.opts[0])
            elif param.secondary_opts:
                args.append(param.secondary_opts[0])
        elif param.multiple:
            for item in value:
                args += [param.opts[0], str(item)]
        else:
            args += [param.opts[0], str(value)]
    return args


@dataclass
class Worker:
    """One worker process and its record."""

    name: str
    command: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    last_exit: int | None = None
    backoff_s: float = 1.0
    restart_at: float | None = None  # monotonic time of the pending restart
    health: dict[str, Any] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command)  # noqa: S603 - our own interpreter and module
        self.started = time.monotonic()
        self.restart_at = None
        log.info("worker %s started (pid %d)", self.name, self.proc.pid)


class Supervisor:
    """N worker processes of one node, their summed health, restarts and a graceful stop.

    Args:
        settings: the broker (the supervisor's own client: clean session, Last Will ``offline``).
        node: the node name; workers are ``<node>.w<k>``.
        processes: number of workers.
        worker_args: ``run`` options every worker gets (without ``--node`` / ``--partition`` / ``--processes``).
        partitioned: give worker k ``--partition k/N`` (False in failover mode: rendezvous decides).
        health_interval_s: period of the node's health message, s.
        max_backoff_s: longest wait before restarting a worker that keeps dying, s.
    """

    def __init__(self, settings: MqttSettings, node: str, processes: int, worker_args: Sequence[str],
                 partitioned: bool = True, health_interval_s: float = 5.0, max_backoff_s: float = 30.0):
        self.settings = settings
        self.node = node
        self.health_interval_s = health_interval_s
        self.max_backoff_s = max_backoff_s
        self.started_wall = time.time()
        self.workers = []
        for k in range(processes):
            name = worker_node(node, k)
            command = [sys.executable, "-m", "beatssl.cli", "run", *worker_args, "--processes", "1",
                       "--node", name, *(["--partition", f"{k}/{processes}"] if partitioned else [])]
            if settings.client_id:
                command += ["--client-id", f"{settings.client_id}-w{k}"]
            self.workers.append(Worker(name, command))
        self._by_topic = {proto.health_topic(w.name): w for w in self.workers}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._changed = threading.Event()
        #: set when a worker exited with a usage error: the node cannot run (``failure`` says which)
        self.failed = threading.Event()
        self.failure: str | None = None
        self.connected = threading.Event()
        self._topic = proto.health_topic(node)
        offline = proto.dumps({"v": proto.PROTOCOL_VERSION, "node": node, "state": "offline"})
        self._offline = offline
        self.client = make_client(settings, "beatssl-supervisor", will=(self._topic, offline))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._thread = threading.Thread(target=self._supervise, name="edge-supervisor", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Supervisor:
        b = self.settings.broker
        self.client.connect_async(b.host, b.port, keepalive=self.settings.keepalive_s)
        self.client.loop_start()
        for w in self.workers:
            w.start()
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM to every worker, wait up to ``timeout_s`` (then SIGKILL), publish ``offline``. Returns 0 when
        every worker exited 0, else 1."""
        self._stopping.set()
        self._thread.join(5.0)
        with self._lock:
            running = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for w in running:
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        ok = not self.failed.is_set()
        for w in running:
            try:
                w.last_exit = w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %s did not stop within %.0f s; killed", w.name, timeout_s)
                w.proc.kill()
                w.last_exit = w.proc.wait()
            if w.last_exit != 0:
                ok = False
                log.error("worker %s exited %s", w.name, w.last_exit)
        info = self.client.publish(self._topic, self._offline, qos=1, retain=True)
        info.wait_for_publish(5.0)
        self.client.disconnect()
        self.client.loop_stop()
        return 0 if ok else 1

    # ------------------------------------------------------------------ MQTT
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s refused the supervisor: %s", self.settings.broker, reason_code)
            return
        client.subscribe([(topic, 1) for topic in self._by_topic])
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        worker = self._by_topic.get(message.topic)
        try:
            health = json.loads(message.payload)
        except ValueError:
            return
        if worker is not None and isinstance(health, dict):
            with self._lock:
                if (worker.health or {}).get("state") != health.get("state"):
                    self._changed.set()  # a worker came online or went away: say so now, not at the next period
                worker.health = health

    # ------------------------------------------------------------------ supervision
    def _supervise(self) -> None:
        next_health = time.monotonic()
        while not self._stopping.wait(0.2):
            now = time.monotonic()
            for w in self.workers:
                self._check(w, now)
            if (now >= next_health or self._changed.is_set()) and self.connected.is_set():
                self._changed.clear()
                self.client.publish(self._topic, proto.dumps(self.health()), qos=1, retain=True)
                next_health = now + self.health_interval_s

    def _check(self, w: Worker, now: float) -> None:
        with self._lock:
            if w.restart_at is not None:
                if now >= w.restart_at and not self._stopping.is_set():
                    w.restarts += 1
                    w.start()
                return
            code = w.proc.poll() if w.proc is not None else None
            if code is None or self._stopping.is_set():
                return
            w.last_exit = code
            w.health = {"state": "offline"}
            self._changed.set()
            if code == USAGE_EXIT:
                self.failure = f"worker {w.name} exited {code} (usage error)"
                log.error("%s; stopping the node", self.failure)
                self.failed.set()
                return
            delay = w.backoff_s if now - w.started < 60.0 else 1.0  # dying young again: wait longer each time
            w.backoff_s = min(self.max_backoff_s, 2 * delay)
            w.restart_at = now + delay
            log.error("worker %s (pid %d) exited %d; restarting in %.0f s", w.name, w.proc.pid, code, delay)

    def health(self) -> dict[str, Any]:
        """The node's health: the sum of its workers' latest health messages, and each worker's record."""
        with self._lock:
            records = [(w, dict(w.health or {}), w.proc.pid if w.proc else None) for w in self.workers]
        rejected: dict[str, int] = {}
        for _, h, _ in records:
            for code, n in (h.get("rejected") or {}).items():
                rejected[code] = rejected.get(code, 0) + n
        states = [h.get("state", "starting") for _, h, _ in records]
        return {
            "v": proto.PROTOCOL_VERSION,
            "node": self.node,
            "state": "failed" if self.failed.is_set() else "online" if all(s == "online" for s in states)
            else "degraded",
            "failure": self.failure,
            "uptime_s": round(time.time() - self.started_wall, 1),
            "wall_time": round(time.time(), 3),
            "processes": len(records),
            **{key: sum(int(h.get(key) or 0) for _, h, _ in records) for key in SUMMED},
            "rejected": rejected,
            "restarts": sum(w.restarts for w, _, _ in records),
            "workers": {w.name: {"state": s, "pid": pid, "restarts": w.restarts, "last_exit": w.last_exit,
                                 "devices": h.get("devices"), "beats": h.get("beats"),
                                 "detection_latency_s": h.get("detection_latency_s")}
                        for (w, h, pid), s in zip(records, states, strict=True)},
        }
