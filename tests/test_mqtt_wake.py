"""The edge's paho client: its network loop does not wake itself for the PUBACKs it queues, every PUBACK still goes
out, and a publication from another thread still wakes the idle loop (a real mosquitto on 127.0.0.1)."""

from __future__ import annotations

import threading
import time

from edge.transport.broker import EmbeddedBroker
from edge.transport.mqtt import MqttSettings, _LoopWake, connect_properties, make_client

N_CHUNKS = 300


def _connect(client, settings: MqttSettings, persistent: bool = False) -> None:  # noqa: ANN001
    connected = threading.Event()
    client.on_connect = lambda *_: connected.set()
    kwargs = {"clean_start": False, "properties": connect_properties(settings)} if persistent else {}
    client.connect(settings.broker.host, settings.broker.port, keepalive=10, **kwargs)
    client.loop_start()
    assert connected.wait(5)


def test_loop_skips_its_own_wakeups_and_still_acks_every_chunk(broker: EmbeddedBroker) -> None:
    settings = MqttSettings(broker.address)
    got: list[bytes] = []
    all_in = threading.Event()

    def on_message(_c, _u, msg) -> None:  # noqa: ANN001
        got.append(msg.payload)
        if len(got) == N_CHUNKS:
            all_in.set()

    sub = make_client(settings, "test-wake", session_id="test-wake-sub")
    sub.on_message = on_message
    _connect(sub, settings, persistent=True)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.subscribe("ecg/wake/samples", qos=1)
    assert subscribed.wait(5)
    feed = make_client(settings, "test-wake-feed")
    _connect(feed, settings)
    for i in range(N_CHUNKS):
        feed.publish("ecg/wake/samples", i.to_bytes(2, "big"), qos=1)
    assert all_in.wait(10), f"{len(got)} of {N_CHUNKS} chunks"
    wake = sub._sockpairW
    assert isinstance(wake, _LoopWake)
    assert wake.skipped >= N_CHUNKS  # one PUBACK per chunk, queued by the loop itself: no wake-up byte

    # a publication from this (non-loop) thread wakes the idle loop: it reaches the broker at once, not after
    # the loop's 1 s select timeout
    echoes: list[float] = []
    echo = threading.Event()
    feed.on_message = lambda *_: (echoes.append(time.monotonic()), echo.set())
    feed.subscribe("beatssl/wake/beats", qos=1)
    time.sleep(0.3)
    delays = []
    for i in range(5):
        time.sleep(0.2)  # both loops idle in select
        echo.clear()
        sent = time.monotonic()
        sub.publish("beatssl/wake/beats", str(i), qos=1)
        assert echo.wait(2)
        delays.append(echoes[-1] - sent)
    assert max(delays) < 0.5, delays
    assert wake.sent >= 5

    # every PUBACK went out: the persistent session, reconnected, gets no chunk again
    sub.disconnect()
    sub.loop_stop()
    again: list[bytes] = []
    back = make_client(settings, "test-wake", session_id="test-wake-sub")
    back.on_message = lambda _c, _u, msg: again.append(msg.payload)
    _connect(back, settings, persistent=True)
    time.sleep(1.0)
    back.disconnect()
    back.loop_stop()
    feed.disconnect()
    feed.loop_stop()
    assert again == []
    assert sorted(got) == [i.to_bytes(2, "big") for i in range(N_CHUNKS)]
