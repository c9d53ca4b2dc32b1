"""Against a locked-down mosquitto on a loopback port: TLS with a CA and server certificate made here
(`cryptography`), a password file (mosquitto's PBKDF2-SHA512 ``$7$`` format) and an ACL file.

- The edge works over TLS with credentials: a credentialed device's MIT-BIH record comes back as the offline beats.
- Without credentials, with a wrong password, without TLS or with an untrusted CA nobody gets in; a device account
  cannot read ``beatssl/#`` nor forge edge outputs.
- A device can only write its own topic (``pattern write ecg/%u/samples``): a second device that tries to spoof
  another is refused by the broker, and its messages never reach the edge.
- ``--tls-insecure`` (no certificate verification) connects even to an untrusted server, and says so loudly.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from edge_harness import Collector, Feeder

from edge import protocol as proto
from edge.app import EdgeApp, EdgeConfig
from edge.detection.beats import detect_record
from edge.transport.broker import EmbeddedBroker, free_port
from edge.transport.mqtt import BrokerAddress, MqttSettings, make_client
from offline.records import read_record

USERS = ("edge", "viewer", "dev-a", "dev-b", "dev-c", "sim-000")
ACL = """\
# devices: write their own samples topic only (%u = the user name)
pattern write ecg/%u/samples
pattern write sim/%u/truth

user edge
topic read ecg/+/samples
topic write beatssl/#
topic read beatssl/+/alarms/ack

user viewer
topic read beatssl/#
topic write beatssl/+/alarms/ack
"""


# ---------------------------------------------------------------------------------------------- PKI and broker
def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, issuer_key: ec.EllipticCurvePrivateKey,
          ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                              critical=False))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                               x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pem(path: Path, obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
    return path


def mosquitto_password_line(user: str, password: str) -> str:
    """A mosquitto 2 password-file line: ``user:$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``."""
    salt, iterations = os.urandom(12), 101
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


class SecureBroker:
    """Paths and passwords of the locked-down broker, and settings for each account."""

    def __init__(self, folder: Path):
        ca_key, srv_key, rogue_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
        self.ca = _write_pem(folder / "ca.pem", _cert("beatssl test CA", ca_key, "beatssl test CA", ca_key, ca=True))
        self.rogue_ca = _write_pem(folder / "rogue-ca.pem",
                                   _cert("rogue CA", rogue_key, "rogue CA", rogue_key, ca=True))
        server_cert = _write_pem(folder / "server.pem",
                                 _cert("localhost", srv_key, "beatssl test CA", ca_key, ca=False))
        server_key = _write_pem(folder / "server.key", srv_key)
        self.passwords = {u: base64.b64encode(os.urandom(9)).decode() for u in USERS}
        passwd = folder / "passwd"
        passwd.write_text("".join(mosquitto_password_line(u, p) + "\n" for u, p in self.passwords.items()))
        acl = folder / "acl"
        acl.write_text(ACL)
        self.port = 0
        self.files = (f"per_listener_settings false\nallow_anonymous false\npassword_file {passwd}\n"
                      f"acl_file {acl}\ncafile {self.ca}\ncertfile {server_cert}\nkeyfile {server_key}\n"
                      # as deploy/mosquitto-secure.conf: an account cannot take another's client id, and no
                      # packet beyond the edge's payload limit (256 KiB) plus headers reaches anyone
                      "use_username_as_clientid true\nmax_packet_size 300000\n")
        if os.geteuid() == 0:
            self.files += "user root\n"  # else mosquitto drops to 'mosquitto', who cannot read these files

    def config(self, port: int) -> str:
        """mosquitto.conf lines: one TLS listener on 127.0.0.1:``port``, passwords and ACL required."""
        self.port = port
        return f"listener {port} 127.0.0.1\n{self.files}"

    def settings(self, user: str | None, **changes: object) -> MqttSettings:
        base = MqttSettings(BrokerAddress("127.0.0.1", self.port), username=user,
                            password=self.passwords.get(user or ""), tls_ca=self.ca)
        return replace(base, **changes)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SecureBroker:
    return SecureBroker(tmp_path_factory.mktemp("secure-broker"))


@pytest.fixture
def secure(pki: SecureBroker) -> Iterator[SecureBroker]:
    """A fresh locked-down mosquitto per test (no retained messages from the one before)."""
    port = free_port()
    with EmbeddedBroker(port, prefer="mosquitto-only", extra_config=pki.config(port)):
        yield pki


@contextmanager
def secure_edge(sb: SecureBroker) -> Iterator[EdgeApp]:
    app = EdgeApp(EdgeConfig(mqtt=sb.settings("edge"), node="secure", engines=(), stale_after_s=1.0)).start()
    try:
        assert app.wait_connected(10), "the edge could not connect over TLS with its credentials"
        yield app
    finally:
        app.stop()


def try_connect(settings: MqttSettings, timeout_s: float = 5.0) -> str:
    """``"ok"``, the broker's refusal reason, or the transport error of one connection attempt."""
    client = make_client(settings, "test-probe")
    result: list[str] = []
    done = threading.Event()

    def on_connect(c: paho.Client, u: object, flags: object, rc: paho.ReasonCode, props: object) -> None:
        result.append("ok" if not rc.is_failure else str(rc))
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: done.set()
    try:
        client.connect(settings.broker.host, settings.broker.port, keepalive=5)
    except (ssl.SSLError, OSError) as exc:
        return f"transport: {type(exc).__name__}"
    client.loop_start()
    done.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    return result[0] if result else "no CONNACK"


def mitdb(data_dir: Path, name: str, seconds: float):
    rec = read_record(data_dir / "mitdb" / name)
    return rec.signal_mv[: int(seconds * rec.fs_hz)], rec.fs_hz, rec.leads


def offline_beats(sig, fs: float) -> list[int]:
    return [b.sample for b in detect_record(sig, fs, chunk_samples=int(round(0.04 * fs)))]


# ---------------------------------------------------------------------------------------------- tests
def test_edge_works_over_tls_with_credentials(secure: SecureBroker, data_dir: Path) -> None:
    sig, fs, leads = mitdb(data_dir, "100", 20.0)
    with secure_edge(secure) as edge:
        col = Collector(secure.settings("viewer"))
        feed = Feeder(secure.settings("dev-a"))
        feed.send("dev-a", feed.chunks(sig, fs, leads))
        assert col.wait_for(lambda: any(m["state"] == "stale" for m in col.get(proto.status_topic("dev-a"))), 15)
        assert [m["sample"] for m in col.get(proto.beats_topic("dev-a"))] == offline_beats(sig, fs)
        assert edge.devices()["dev-a"].counters.errors == {} and edge.rejected == {}
        col.close()
        feed.close()


def test_nobody_gets_in_without_credentials_tls_and_the_right_ca(secure: SecureBroker) -> None:
    assert try_connect(secure.settings("viewer")) == "ok"
    assert try_connect(secure.settings(None)) != "ok"  # anonymous: refused
    assert try_connect(secure.settings("viewer", password="wrong")) != "ok"
    assert try_connect(secure.settings("viewer", tls_ca=None)).startswith(("transport", "no CONNACK"))  # plain MQTT
    assert try_connect(secure.settings("viewer", tls_ca=secure.rogue_ca)).startswith("transport")  # untrusted


def test_anonymous_and_device_accounts_cannot_read_outputs_or_write_samples(secure: SecureBroker,
                                                                              data_dir: Path) -> None:
    sig, fs, leads = mitdb(data_dir, "100", 6.0)
    with secure_edge(secure) as edge:
        viewer = Collector(secure.settings("viewer"))
        nosy = Collector(secure.settings("dev-b"), topics=("beatssl/#",))  # a device account: no read on outputs
        # an anonymous client is refused at CONNECT, so it can neither publish to ecg/# nor subscribe to beatssl/#
        anon = make_client(secure.settings(None), "test-anon")
        refused = threading.Event()
        anon.on_connect = lambda c, u, f, rc, p: refused.set() if rc.is_failure else None
        anon.connect("127.0.0.1", secure.port)
        anon.loop_start()
        assert refused.wait(5)
        anon.publish(proto.samples_topic("dev-c"), b"{}", qos=1)
        anon.loop_stop()
        # a device cannot forge the edge's outputs either
        forger = Feeder(secure.settings("dev-b"))
        forger.client.publish(proto.beats_topic("dev-a"), b'{"v": 1, "sample": 1}', qos=1).wait_for_publish(5)
        feed = Feeder(secure.settings("dev-a"))
        feed.send("dev-a", feed.chunks(sig, fs, leads))
        assert viewer.wait_for(lambda: any(m["state"] == "stale" for m in viewer.get(proto.status_topic("dev-a"))),
                               15)
        assert viewer.get(proto.health_topic("secure")), "the viewer reads the edge's outputs"
        assert [m["sample"] for m in viewer.get(proto.beats_topic("dev-a"))] == offline_beats(sig, fs)  # no forgery
        assert dict(nosy.messages) == {}, "a device account must not read beatssl/#"
        assert set(edge.devices()) == {"dev-a"} and edge.rejected == {}
        for c in (viewer, nosy, forger, feed):
            c.close()


def test_a_device_cannot_spoof_another_device(secure: SecureBroker, data_dir: Path) -> None:
    sig_a, fs, leads = mitdb(data_dir, "100", 10.0)
    sig_b, _, _ = mitdb(data_dir, "101", 10.0)
    with secure_edge(secure) as edge:
        col = Collector(secure.settings("viewer"))
        dev_a = Feeder(secure.settings("dev-a"))
        dev_b = Feeder(secure.settings("dev-b"))
        refusals: list[int] = []
        dev_b.client.on_publish = lambda c, u, mid, rc, p: refusals.append(rc.value) if rc.is_failure else None
        chunks_a, chunks_b = dev_a.chunks(sig_a, fs, leads), dev_b.chunks(sig_b, fs, leads)
        for i in range(0, len(chunks_a), 25):
            dev_a.send("dev-a", chunks_a[i:i + 25])
            dev_b.send("dev-b", chunks_b[i:i + 25])  # its own topic: allowed
            dev_b.send("dev-a", chunks_b[i:i + 25])  # spoofing dev-a, same seq numbers: refused by the broker
            dev_b.send("dev-c", chunks_b[i:i + 25])  # spoofing a device that is not streaming: refused
        assert col.wait_for(lambda: all(any(m["state"] == "stale" for m in col.get(proto.status_topic(d)))
                                        for d in ("dev-a", "dev-b")), 15)
        assert [m["sample"] for m in col.get(proto.beats_topic("dev-a"))] == offline_beats(sig_a, fs)
        assert [m["sample"] for m in col.get(proto.beats_topic("dev-b"))] == offline_beats(sig_b, fs)
        assert edge.devices()["dev-a"].counters.errors == {}, "spoofed chunks reached dev-a's stream"
        assert col.get(proto.errors_topic("dev-a")) == []
        assert "dev-c" not in edge.devices() and not col.get(proto.status_topic("dev-c"))
        assert not col.get(proto.beats_topic("dev-c"))
        assert len(refusals) == 2 * len(chunks_b) and set(refusals) == {0x87}  # MQTT 5 PUBACK: Not authorized
        for c in (col, dev_a, dev_b):
            c.close()


def test_simulator_replays_over_tls_with_a_config_file(secure: SecureBroker, tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from simulator.cli import app as sim_cli

    conf = tmp_path / "beatssl.toml"  # connection keys at the top level, the simulator's own table below
    conf.write_text(f'broker = "127.0.0.1:{secure.port}"\ntls_ca = "{secure.ca}"\nworkers = 3\n'
                    f'[replay]\nusername = "sim-000"\ndevices = 1\n')
    monkeypatch.setenv("BEATSSL_MQTT_PASSWORD", secure.passwords["sim-000"])
    with secure_edge(secure) as edge:
        col = Collector(secure.settings("viewer"))
        result = CliRunner().invoke(sim_cli, ["replay", "sample", "--config", str(conf), "--no-loop", "--speed", "max",
                                              "--duration-s", "8", "--quiet"])
        assert result.exit_code == 0, result.output
        assert col.wait_for(lambda: len(col.get(proto.beats_topic("sim-000"))) >= 5, 10)
        assert edge.devices()["sim-000"].counters.errors == {}
        col.close()


def test_tls_insecure_connects_without_verification_and_warns_loudly(secure: SecureBroker, caplog, capsys) -> None:
    from beatssl.cli import mqtt_settings

    with caplog.at_level(logging.WARNING, logger="edge.transport.mqtt"):
        insecure = secure.settings("viewer", tls_ca=secure.rogue_ca, tls_insecure=True)
        assert try_connect(insecure) == "ok"  # the server's certificate was not checked against any trusted CA
    assert any("verification is OFF" in r.getMessage() for r in caplog.records)
    settings = mqtt_settings(BrokerAddress("127.0.0.1", secure.port), tls_ca=secure.rogue_ca, tls_insecure=True)
    assert settings.tls_insecure
    assert "WARNING: --tls-insecure" in capsys.readouterr().err


def test_a_device_cannot_take_over_the_edge_session(secure: SecureBroker, data_dir: Path) -> None:
    """Before (no use_username_as_clientid): a device connecting with the edge's client id knocked the edge off the
    broker and took its persistent session."""
    sig, fs, leads = mitdb(data_dir, "100", 8.0)
    with secure_edge(secure) as edge:
        drops: list[object] = []
        edge.client.on_disconnect = lambda *a: drops.append(a)
        intruder = make_client(secure.settings("dev-a", client_id="beatssl-edge-secure"), "intruder")
        intruder.connect("127.0.0.1", secure.port)
        intruder.loop_start()
        time.sleep(1.5)
        col, dev = Collector(secure.settings("viewer")), Feeder(secure.settings("dev-b"))
        dev.send("dev-b", dev.chunks(sig, fs, leads))
        assert col.wait_for(lambda: any(m["state"] == "stale" for m in col.get(proto.status_topic("dev-b"))), 15)
        assert drops == [] and edge.client.is_connected(), "the intruder took the edge's client id"
        assert [m["sample"] for m in col.get(proto.beats_topic("dev-b"))] == offline_beats(sig, fs)
        intruder.loop_stop()
        intruder.disconnect()
        for c in (col, dev):
            c.close()


def test_the_broker_drops_oversized_packets_before_the_edge(secure: SecureBroker) -> None:
    """Before (no max_packet_size): a 1 MiB publish reached the edge, which had to parse and reject it."""
    with secure_edge(secure) as edge:
        dev = Feeder(secure.settings("dev-a"))
        dev.client.publish(proto.samples_topic("dev-a"), b"{" + b" " * (1 << 20) + b"}", qos=1)
        time.sleep(1.5)
        assert "dev-a" not in edge.devices() and edge.rejected == {}
        dev.client.loop_stop()
