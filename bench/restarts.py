"""Beats expected vs received across a broker outage and an edge kill -9 + restart, on a real mosquitto.

MIT-BIH 100 (60 s, 2 leads, 360 Hz) is sent as one device in 40 ms chunks:

* **outage** (``--outages``, s): the first half goes to an in-process edge; once the collector holds every beat the
  edge could decide, mosquitto is stopped for the outage and started again; the second half follows once the edge
  and the collector are back. Detector restarts, first beats of a run and the health's outage report are read.
* **kill -9**: a third goes to a ``beatssl-edge run`` process, which is then killed with SIGKILL; the next third is
  sent while it is down (the broker queues it for the node's persistent session), then the node is restarted and
  the last third follows; SIGTERM flushes it at the end.

Beats are matched to the offline detector (:func:`edge.detection.beats.detect_record`) within 2 samples. Prints a
table, writes ``--json`` and a PNG beside it.

    python bench/restarts.py --json bench/results/restarts.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.detection.beats import detect_record
from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, make_client
from offline.collector import Collector
from offline.records import read_record

ROOT = Path(__file__).resolve().parent.parent
CHUNK_S = 0.04


def chunks(sig: np.ndarray, fs: float, leads: tuple[str, ...]) -> list[bytes]:
    n = int(round(CHUNK_S * fs))
    return [proto.encode_samples_binary(proto.SamplesMessage(i, fs, leads, start / fs, sig[start:start + n]))
            for i, start in enumerate(range(0, len(sig), n))]


def send(client, device: str, payloads: list[bytes]) -> None:  # noqa: ANN001 - a paho client
    infos = [client.publish(proto.samples_topic(device), p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(30)


def matched(got: list[int], want: list[int], tol: int = 2) -> int:
    g = np.asarray(sorted(got))
    return sum(int(len(g) > 0 and np.min(np.abs(g - w)) <= tol) for w in want)


def outage(sig: np.ndarray, fs: float, leads: tuple[str, ...], want: list[int], outage_s: float) -> dict:
    with EmbeddedBroker(prefer="mosquitto-only") as broker:
        settings = MqttSettings(broker.address)
        edge = EdgeApp(EdgeConfig(mqtt=settings, node="restarts", stale_after_s=5.0)).start()
        try:
            edge.wait_connected(10)
            col = Collector(settings)
            feed = make_client(settings, "restarts-feed")
            feed.connect(broker.address.host, broker.address.port)
            feed.loop_start()
            payloads = chunks(sig, fs, leads)
            half = len(payloads) // 2
            send(feed, "dev", payloads[:half])
            cut = half * int(round(CHUNK_S * fs))
            decided = [w for w in want if w < cut - 0.5 * fs]
            col.wait_for(lambda: matched([m["sample"] for m in col.get(proto.beats_topic("dev"))], decided)
                         == len(decided), 20)
            subacks = col.subacks
            broker.stop()
            edge.subscribed.clear()
            time.sleep(outage_s)
            broker.start()
            col.wait_for(lambda: edge.subscribed.is_set() and feed.is_connected() and col.subacks > subacks, 60)
            send(feed, "dev", payloads[half:])
            col.wait_for(lambda: any(m["state"] == "stale" for m in col.get(proto.status_topic("dev"))), 30)
            beats = col.get(proto.beats_topic("dev"))
            got = [m["sample"] for m in beats]
            stream, health = edge.devices()["dev"], edge.health("online")
            feed.loop_stop()
            col.close()
            return {"case": f"broker outage {outage_s:g} s", "expected": len(want), "received": len(got),
                    "distinct": len(set(got)), "matched": matched(got, want), "detector_runs": sum(
                        m["rr_s"] is None for m in beats), "restarts": stream.counters.restarts,
                    "errors": dict(stream.counters.errors), "health_broker_outages": health["broker_outages"],
                    "health_last_outage_s": health["last_outage_s"]}
        finally:
            edge.stop()


def kill9(sig: np.ndarray, fs: float, leads: tuple[str, ...], want: list[int]) -> dict:
    with EmbeddedBroker(prefer="mosquitto-only") as broker:
        settings = MqttSettings(broker.address)
        col = Collector(settings)
        feed = make_client(settings, "restarts-feed")
        feed.connect(broker.address.host, broker.address.port)
        feed.loop_start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BEATSSL_")}
        cmd = [sys.executable, "-m", "beatssl.cli", "run", "--broker", str(broker.address), "--no-engines",
               "--node", "k9", "--log-level", "warning"]

        def start() -> subprocess.Popen:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        payloads = chunks(sig, fs, leads)
        third = len(payloads) // 3
        edge = start()
        try:
            col.wait_for(lambda: any(m["state"] == "online" for m in col.get(proto.health_topic("k9"))), 30)
            send(feed, "k", payloads[:third])
            col.wait_for(lambda: len(col.get(proto.beats_topic("k"))) >= 10, 20)
            edge.send_signal(signal.SIGKILL)
            edge.wait()
            send(feed, "k", payloads[third:2 * third])
            edge = start()
            send(feed, "k", payloads[2 * third:])
            col.wait_for(lambda: max([m["sample"] for m in col.get(proto.beats_topic("k"))] or [0]) >= want[-4], 60)
        finally:
            edge.send_signal(signal.SIGTERM)
            edge.wait(30)
        time.sleep(0.5)
        got = [m["sample"] for m in col.get(proto.beats_topic("k"))]
        lost = [round(w / fs, 2) for w in want if not np.any(np.abs(np.asarray(got) - w) <= 2)]
        feed.loop_stop()
        col.close()
        return {"case": "edge kill -9 + restart", "expected": len(want), "received": len(got),
                "distinct": len(set(got)), "matched": matched(got, want), "lost_at_s": lost,
                "errors_published": [m["code"] for m in col.get(proto.errors_topic("k"))],
                "kill_at_s": round(third * CHUNK_S, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--seconds", type=float, default=60.0, help="signal sent per case (s)")
    parser.add_argument("--outages", default="3,20", help="broker outages to run, s, comma-separated")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rec = read_record(args.data / "mitdb" / "100")
    sig = rec.signal_mv[: int(args.seconds * rec.fs_hz)]
    want = [b.sample for b in detect_record(sig, rec.fs_hz)]
    rows = [outage(sig, rec.fs_hz, rec.leads, want, float(s)) for s in args.outages.split(",") if s]
    rows.append(kill9(sig, rec.fs_hz, rec.leads, want))
    table = Table(title=f"MIT-BIH 100, {args.seconds:g} s, beats matched within 2 samples")
    for col in ("case", "expected", "received", "distinct", "matched", "restarts / lost", "reported"):
        table.add_column(col)
    for r in rows:
        extra = str(r.get("restarts", r.get("lost_at_s")))
        reported = (f"outages {r['health_broker_outages']}, last {r['health_last_outage_s']} s, errors {r['errors']}"
                    if "health_broker_outages" in r else f"errors {r['errors_published']}")
        table.add_row(r["case"], str(r["expected"]), str(r["received"]), str(r["distinct"]), str(r["matched"]),
                      extra, reported)
    Console().print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2))
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
        x = np.arange(len(rows))
        ax.bar(x - 0.2, [r["expected"] for r in rows], 0.4, label="expected")
        ax.bar(x + 0.2, [r["matched"] for r in rows], 0.4, label="received (matched)")
        ax.set_xticks(x, [r["case"] for r in rows])
        ax.set_ylabel("beats")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.json.with_suffix(".png"))
        print(f"wrote {args.json} and {args.json.with_suffix('.png')}")


if __name__ == "__main__":
    main()
