"""Wire protocol: round trips of both encodings and a clear ProtocolError code for each kind of bad payload."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge import protocol as proto
from edge.transport.mqtt import BrokerAddress


def _msg(n: int = 20, leads: tuple[str, ...] = ("I", "II", "V1")) -> proto.SamplesMessage:
    rng = np.random.default_rng(0)
    return proto.SamplesMessage(7, 500.0, leads, 12.5, rng.normal(0, 0.5, (n, len(leads))).astype(np.float32))


def test_json_round_trip_is_lead_major_and_within_rounding() -> None:
    msg = _msg()
    payload = proto.encode_samples_json(msg)
    obj = json.loads(payload)
    assert obj["v"] == 1 and obj["units"] == "mV" and len(obj["data"]) == 3 and len(obj["data"][0]) == 20
    back = proto.decode_samples(payload)
    assert back.seq == 7 and back.fs_hz == 500.0 and back.leads == msg.leads and back.t0_s == 12.5
    np.testing.assert_allclose(back.data_mv, msg.data_mv, atol=5e-5)


def test_binary_round_trip_within_one_lsb() -> None:
    msg = _msg()
    payload = proto.encode_samples_binary(msg, gain_adu_per_mv=200.0)
    assert payload[0] == proto.BINARY_MAGIC
    assert len(payload) == proto.BINARY_HEADER.size + len("I,II,V1") + 2 * 20 * 3
    back = proto.decode_samples(payload)
    assert back.leads == msg.leads and back.seq == 7 and back.t0_s == 12.5
    assert np.abs(back.data_mv - msg.data_mv).max() <= 0.5 / 200.0 + 1e-7


def test_adu_units_are_scaled_by_gain() -> None:
    payload = json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["ii"], "t0": 0, "units": "adu", "gain": 200,
                          "data": [[200, -400, 0]]}).encode()
    back = proto.decode_samples(payload)
    assert back.leads == ("II",)
    np.testing.assert_allclose(back.data_mv[:, 0], [1.0, -2.0, 0.0])


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"{not json", "malformed"),
        (b"[1,2]", "malformed"),
        (json.dumps({"v": 2, "seq": 0, "fs": 250, "leads": ["I"], "data": [[0]]}).encode(), "unknown_version"),
        (json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["I", "II"], "data": [[0, 1]]}).encode(), "lead_count"),
        (json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["I"], "data": [[0, float("nan")]]}).encode(),
         "non_finite"),
        (json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["I"], "data": [[0, 1e9]]}).encode(), "amplitude"),
        (json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["I"], "data": [[0, 500.0]]}).encode(), "amplitude"),
        (json.dumps({"v": 1, "seq": 0, "fs": 5, "leads": ["I"], "data": [[0]]}).encode(), "bad_fs"),
        (json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["I", "I"], "data": [[0], [0]]}).encode(), "bad_leads"),
        (json.dumps({"v": 1, "seq": 0, "fs": 250, "leads": ["I"], "data": [[]]}).encode(), "malformed"),
        (b"", "malformed"),
        (bytes([proto.BINARY_MAGIC, 1, 1, 0]), "malformed"),
        (bytes([proto.BINARY_MAGIC, 9]) + bytes(40), "unknown_version"),
    ],
)
def test_bad_payloads_raise_clear_codes(payload: bytes, code: str) -> None:
    with pytest.raises(proto.ProtocolError) as exc:
        proto.decode_samples(payload)
    assert exc.value.code == code
    assert str(exc.value)


def test_oversize_payload_is_rejected_before_parsing() -> None:
    limits = proto.Limits(max_payload_bytes=100)
    with pytest.raises(proto.ProtocolError) as exc:
        proto.decode_samples(proto.encode_samples_json(_msg(200)), limits)
    assert exc.value.code == "oversize"


def test_binary_length_mismatch_is_malformed() -> None:
    payload = proto.encode_samples_binary(_msg())
    with pytest.raises(proto.ProtocolError) as exc:
        proto.decode_samples(payload[:-2])
    assert exc.value.code == "malformed" and "header says" in str(exc.value)


def test_topics_and_device_ids() -> None:
    assert proto.samples_topic("bed-7") == "ecg/bed-7/samples"
    assert proto.device_from_topic("ecg/bed-7/samples") == "bed-7"
    assert proto.device_from_topic("beatssl/edge/n1/health") is None
    assert proto.valid_device_id("sim-000")
    for bad in ("", "a/b", "a+b", "a#", "x" * 65, "tab\there"):
        assert not proto.valid_device_id(bad)


def test_broker_address_parsing() -> None:
    assert BrokerAddress.parse("localhost:1884") == BrokerAddress("localhost", 1884)
    assert BrokerAddress.parse("10.0.0.1") == BrokerAddress("10.0.0.1", 1883)
    assert BrokerAddress.parse("[::1]:1883") == BrokerAddress("::1", 1883)
    for bad in ("", ":1883", "host:abc", "host:70000"):
        with pytest.raises(ValueError):
            BrokerAddress.parse(bad)


def test_binary_decode_is_adu_over_gain_rounded_once_and_bad_names_fail_every_time() -> None:
    msg = _msg(leads=("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"))
    payload = proto.encode_samples_binary(msg, gain_adu_per_mv=1000.0)
    adu = np.clip(np.round(msg.data_mv.astype(np.float64) * 1000.0), -32768, 32767).astype(np.int16)
    back = proto.decode_samples(payload)
    assert back.data_mv.dtype == np.float32 and back.data_mv.shape == (20, 12)
    np.testing.assert_array_equal(back.data_mv, (adu / 1000.0).astype(np.float32))  # bit-exact, not approximate
    assert proto.decode_samples(payload).leads == back.leads == msg.leads  # the cached name field gives the same
    bad = bytearray(payload)
    bad[proto.BINARY_HEADER.size] = 0xFF  # a non-ASCII byte in the name field
    for _ in range(2):  # a rejected name field is not cached as accepted
        with pytest.raises(proto.ProtocolError) as err:
            proto.decode_samples(bytes(bad))
        assert err.value.code == "bad_leads"


def test_resume_from_the_previous_owners_status() -> None:
    """The gap is the signal after the previous owner's last sample (t_last_s + one sample period) up to the first
    sample processed now; the same node name is a restart, another a handover; a stream that was not running (stale,
    nothing processed, not a status) is no resume."""
    left = {"v": 1, "device": "bed-1", "node": "n0", "state": "online", "fs": 250.0, "t_last_s": 10.996}
    r = proto.resume_from_status(proto.dumps(left), "n1", 12.5)
    assert r is not None and r.by == "handover" and r.at_s == 12.5
    assert r.gap_s == pytest.approx(12.5 - 11.0)
    assert r.fields() == {"resumed_by": "handover", "resume_gap_s": 1.5, "resumed_at_s": 12.5}
    assert proto.resume_from_status(proto.dumps(left), "n0", 11.0).fields()["resume_gap_s"] == 0.0
    assert proto.resume_from_status(proto.dumps(left), "n0", 11.0).by == "restart"
    assert proto.resume_from_status(proto.dumps({**left, "state": "flat"}), "n1", 12.5) is not None
    for bad in ({**left, "state": "stale"}, {**left, "t_last_s": None}, {**left, "fs": 0}, {**left, "fs": True}):
        assert proto.resume_from_status(proto.dumps(bad), "n1", 12.5) is None, bad
    assert proto.resume_from_status(b"[1, 2]", "n1", 12.5) is None
    assert proto.resume_from_status(b"\xff", "n1", 12.5) is None
    assert proto.is_status(proto.status_topic("bed-1")) and not proto.is_status(proto.beats_topic("bed-1"))
    assert set(proto.NO_RESUME) == set(r.fields()) and r.by in proto.RESUMED_BY


def test_fast_properties_decode_publish_like_paho() -> None:
    """paho's PUBLISH decoder runs with edge.transport.mqtt.FastProperties (tables built once); a PUBLISH with every
    kind of property it may carry decodes to the same properties as with paho's own class."""
    import paho.mqtt._packet as paho_packet
    from paho.mqtt.enums import MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from edge.transport.mqtt import FastProperties

    assert paho_packet.Properties is FastProperties
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = proto.CONTENT_TYPE_BINARY
    props.PayloadFormatIndicator = 0
    props.MessageExpiryInterval = 30
    props.ResponseTopic = "beatssl/x/replies"
    props.CorrelationData = b"\x01\x02"
    props.UserProperty = [("site", "ward 3"), ("bed", "12")]
    props.SubscriptionIdentifier = 7
    topic = b"ecg/bed-1/samples"
    body = len(topic).to_bytes(2, "big") + topic + (9).to_bytes(2, "big") + props.pack() + b"\xec payload"
    fast = paho_packet.decode_publish(0x32, body, MQTTProtocolVersion.MQTTv5)
    try:
        paho_packet.Properties = Properties
        slow = paho_packet.decode_publish(0x32, body, MQTTProtocolVersion.MQTTv5)
    finally:
        paho_packet.Properties = FastProperties
    assert fast.properties.json() == slow.properties.json() == props.json()
    assert fast.properties.ContentType == proto.CONTENT_TYPE_BINARY and fast.payload == slow.payload == b"\xec payload"
    plain = len(topic).to_bytes(2, "big") + topic + b"\x00{}"  # QoS 0, no properties
    empty = paho_packet.decode_publish(0x30, plain, MQTTProtocolVersion.MQTTv5)
    assert empty.properties.json() == {} and not hasattr(empty.properties, "ContentType")


def test_buffered_client_reads_many_packets_per_recv_and_loses_none(broker, monkeypatch) -> None:
    """edge.transport.mqtt.BufferedClient (every client make_client builds) reads the socket in blocks: through a
    real mosquitto, 400 QoS 1 messages of 1 B to 150 kB (larger than a block) arrive complete and in order, in fewer
    socket reads than messages (paho alone: three or more per message)."""
    import threading

    import paho.mqtt.client as paho

    from edge.transport.mqtt import RECV_BYTES, BufferedClient, MqttSettings, make_client

    reads = [0]
    plain_recv = paho.Client._sock_recv

    def counting(self, bufsize):
        reads[0] += 1
        return plain_recv(self, bufsize)

    settings = MqttSettings(broker.address)
    rng = np.random.default_rng(3)
    sizes = [int(s) for s in rng.integers(1, 2000, 400)]
    sizes[100], sizes[300] = RECV_BYTES + 12_345, 150_000
    payloads = [rng.bytes(n) for n in sizes]
    got: list[bytes] = []
    done = threading.Event()
    sub = make_client(settings, "test-buffered")
    assert isinstance(sub, BufferedClient)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()

    def on_message(client, userdata, message) -> None:
        got.append(message.payload)
        if len(got) == len(payloads):
            done.set()

    sub.on_message = on_message
    sub.connect(broker.address.host, broker.address.port)
    sub.subscribe("test/buffered", qos=1)
    sub.loop_start()
    pub = make_client(settings, "test-buffered-pub")
    pub.connect(broker.address.host, broker.address.port)
    pub.loop_start()
    try:
        assert subscribed.wait(5)
        monkeypatch.setattr(paho.Client, "_sock_recv", counting)
        reads[0] = 0
        infos = [pub.publish("test/buffered", p, qos=1) for p in payloads]
        for info in infos:
            info.wait_for_publish(10)
        assert done.wait(20), f"{len(got)} of {len(payloads)} messages arrived"
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    assert got == payloads
    assert reads[0] < len(payloads), f"{reads[0]} socket reads for {len(payloads)} messages"
    assert sub._rbuf == b"" and sub._rpos == 0  # the buffer went with the socket
