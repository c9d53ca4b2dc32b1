"""An embedded MQTT broker for runs without ``--broker``: mosquitto when installed, else amqtt in-process (the
``broker`` extra).

Both listen on 127.0.0.1 only. mosquitto (MQTT 5, shared subscriptions) runs as a child process with a generated
config; amqtt (MQTT 3.1.1 only) runs on an asyncio loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from edge.transport.mqtt import BrokerAddress

log = logging.getLogger(__name__)

_MOSQUITTO_CANDIDATES = ("mosquitto", "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable, or None."""
    for name in _MOSQUITTO_CANDIDATES:
        path = shutil.which(name) or (name if Path(name).is_file() else None)
        if path:
            return path
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:``port`` now (as mosquitto does: with SO_REUSEADDR)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout_s: float = 10.0, alive: Callable[[], bool] = lambda: True) -> None:
    """Block until ``host:port`` accepts TCP connections; TimeoutError after ``timeout_s``, RuntimeError as soon as
    ``alive()`` (the process that should listen) is False."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not alive():
            raise RuntimeError(f"the broker process exited before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s") from None
            time.sleep(0.05)


class EmbeddedBroker:
    """A broker on 127.0.0.1 for the lifetime of this object (context manager).

    Args:
        port: TCP port; 0 picks ``preferred_port`` when it is free, else a free one.
        prefer: ``"mosquitto"`` (fall back to amqtt when absent), ``"mosquitto-only"`` or ``"amqtt"``.
        extra_config: lines appended to the mosquitto config (listeners, TLS, ACL …) for tests and deployments.
        preferred_port: the port to take when ``port`` is 0 and it is free (``beatssl-edge run``: 1883, so that
            clients with default settings find the broker).
    """

    def __init__(self, port: int = 0, prefer: str = "mosquitto", extra_config: str = "",
                 preferred_port: int | None = None):
        if not port and preferred_port is not None and port_is_free(preferred_port):
            port = preferred_port
        self.port = port or free_port()
        self.prefer = prefer
        self.extra_config = extra_config
        self.kind = ""
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._amqtt = None
        self._log = Path()

    @property
    def address(self) -> BrokerAddress:
        return BrokerAddress("127.0.0.1", self.port)

    @property
    def mqtt5(self) -> bool:
        """Whether the running broker speaks MQTT 5 (mosquitto) or only 3.1.1 (amqtt)."""
        return self.kind == "mosquitto"

    def start(self) -> EmbeddedBroker:
        exe = find_mosquitto() if self.prefer != "amqtt" else None
        if exe:
            self._start_mosquitto(exe)
        elif self.prefer == "mosquitto-only":
            raise RuntimeError("mosquitto is not installed (apt-get install -y mosquitto)")
        else:
            self._start_amqtt()
        if self.kind == "mosquitto":
            proc = self._proc
            try:
                wait_for_port("127.0.0.1", self.port, alive=lambda: proc is not None and proc.poll() is None)
            except RuntimeError:
                lines = self._log.read_text(errors="replace").split("\n") if self._log.is_file() else []
                said = [line for line in lines if line.strip()]
                self.stop()
                raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{self.port}: "
                                   f"{said[-1] if said else 'it exited'}") from None
        log.info("embedded %s broker on %s", self.kind, self.address)
        return self

    def _start_mosquitto(self, exe: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="beatssl-mosquitto-")
        conf = Path(self._tmp.name) / "mosquitto.conf"
        body = self.extra_config or f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        conf.write_text(f"persistence false\nmax_queued_messages 100000\n{body}")
        # its log goes to a file (a pipe nobody reads would fill up and stall the broker); read on a failed start
        self._log = Path(self._tmp.name) / "mosquitto.log"
        with open(self._log, "wb") as log_file:
            self._proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=log_file,
                                          start_new_session=True)
        self.kind = "mosquitto"

    def _start_amqtt(self) -> None:
        try:
            from amqtt.broker import Broker
        except ModuleNotFoundError:
            raise RuntimeError("neither mosquitto nor the in-process broker is installed: apt-get install mosquitto, "
                               "or pip install 'beatssl-edge[broker]'") from None

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._amqtt = Broker(config, loop=loop)
            loop.run_until_complete(self._amqtt.start())
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the in-process amqtt broker did not start on port {self.port}")
        self.kind = "amqtt"

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None
        if self._loop is not None and self._amqtt is not None:
            fut = asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception as exc:  # noqa: BLE001 - best effort on shutdown
                log.debug("amqtt shutdown: %s", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
