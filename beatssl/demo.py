"""The one-command demo: an embedded broker, the simulator replaying the bundled sample records (looping), an edge
node, the live page and the terminal view, all in one process until Ctrl-C or ``duration_s``."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live

from edge.app import EdgeApp, EdgeConfig
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings
from simulator.replay import Replayer
from simulator.sources import sample_records
from viewers.terminal import LiveView
from viewers.web import WebServer


def run_demo(
    devices: int,
    speed: float,
    duration_s: float | None,
    refresh_hz: float,
    edge_options: dict[str, Any],
    make_web: Callable[[MqttSettings], WebServer],
    make_edge: Callable[[EdgeConfig], EdgeApp],
    say: Callable[[str], None],
) -> None:
    """Run the demo.

    Args:
        devices: virtual devices replaying the sample; speed: replay speed (1 = real time).
        duration_s: stop after this long (None: until SIGINT / SIGTERM); refresh_hz: terminal refreshes per second.
        edge_options: EdgeConfig keyword arguments (engines, backend).
        make_web / make_edge: build the live page's server and the edge node (the CLI's, which turn problems into
            one-line errors); say: where status lines go (stderr).
    """
    stop = threading.Event()
    with EmbeddedBroker() as broker:
        settings = MqttSettings(broker.address, protocol="5" if broker.mqtt5 else "3.1.1")
        web = make_web(settings)
        edge = make_edge(EdgeConfig(mqtt=settings, node="demo", **edge_options)).start()
        edge.wait_connected(10)
        say(f"live page: {web.start().url}")
        view = LiveView(settings).start()
        replayer = Replayer(sample_records(), settings, devices=devices, speed=speed, loop=True,
                            device_prefix="demo")
        sim = threading.Thread(target=replayer.run, kwargs={"stop_event": stop}, name="simulator", daemon=True)
        sim.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        deadline = None if duration_s is None else time.monotonic() + duration_s
        console = Console()
        try:
            with Live(view.table(), console=console, refresh_per_second=refresh_hz, transient=False) as live:
                while not stop.wait(1.0 / refresh_hz):
                    live.update(view.table())
                    if deadline is not None and time.monotonic() >= deadline:
                        break
        finally:
            stop.set()
            sim.join(5)
            edge.stop()
            view.stop()
            web.stop()
        if not console.is_terminal:
            sys.stdout.write(json.dumps({"devices": view.summary()}) + "\n")
