"""Prometheus text exposition of an edge node's health (``--metrics-port``), served from one daemon thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def render(health: dict[str, Any]) -> str:
    """Prometheus text format (version 0.0.4) of a health message (see docs/protocol.md)."""
    node = health["node"]
    lines: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]) -> None:
        lines.append(f"# HELP beatssl_{name} {help_text}")
        lines.append(f"# TYPE beatssl_{name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{v}"' for k, v in {"node": node, **labels}.items())
            lines.append(f"beatssl_{name}{{{lab}}} {value}")

    metric("devices", "gauge", "Devices with state on this node.", [({}, health["devices"])])
    metric("devices_online", "gauge", "Devices currently streaming.", [({}, health["devices_online"])])
    metric("beats_total", "counter", "Beats detected.", [({}, health["beats"])])
    metric("published_total", "counter", "Messages handed to the MQTT client.", [({}, health["published"])])
    metric("publish_dropped_total", "counter", "Messages dropped because the outgoing queue was full.",
           [({}, health["publish_dropped"])])
    metric("rejected_total", "counter", "Incoming messages rejected before any device handled them.",
           [({"code": code}, n) for code, n in health["rejected"].items()])
    metric("queue_depth", "gauge", "Chunks waiting in worker queues.", [({}, health["queue_depth"])])
    for key, name, unit in (("detection_latency_s", "detection_latency_seconds", "s"),
                            ("processing_ms", "beat_processing_milliseconds", "ms"),
                            ("rhythm_processing_ms", "rhythm_processing_milliseconds", "ms")):
        q = health.get(key)
        if q:
            metric(name, "summary", f"Per-message latency quantiles ({unit}) over the recent messages.",
                   [({"quantile": k[1:] and f"0.{k[1:]}"}, v) for k, v in q.items()])
    for task, e in health.get("engines", {}).items():
        labels = {"task": task, "engine": e["name"], "backend": e["backend"]}
        metric(f"{task}_windows_total", "counter", f"Windows run by the {task} engine.", [(labels, e["windows"])])
        metric(f"{task}_mean_batch", "gauge", f"Mean batch size of the {task} engine.", [(labels, e["mean_batch"])])
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``GET /metrics`` on ``host:port`` returning :func:`render` of ``health()``."""

    def __init__(self, health: Callable[[], dict[str, Any]], port: int, host: str = "127.0.0.1"):
        get_health = health

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                if self.path.rstrip("/") != "/metrics":
                    self.send_error(404, "only /metrics is served")
                    return
                body = render(get_health()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
