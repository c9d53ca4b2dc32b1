"""MQTT connection settings and client construction, shared by the edge and the simulator.

This is the only module that configures a paho client (address, protocol version, TLS, credentials, keep-alive,
Last Will, outgoing queue bound). Topic strings come from :mod:`edge.protocol`.

It also gives paho's MQTT 5 PUBLISH decoder a faster property set (:class:`FastProperties`): paho 2.x builds its
two 27-entry property tables for every received message and looks names up by scanning them with ``str.replace``,
~25 of the ~35 µs it takes to decode one samples chunk — at 25 chunks per device-second, the largest single cost of
the network thread that every chunk passes through.
"""

from __future__ import annotations

import logging
import os
import ssl
import uuid
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt._packet as paho_packet
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger(__name__)


class FastProperties(Properties):
    """paho's :class:`~paho.mqtt.properties.Properties` with its tables built once for the class instead of once per
    instance and its name lookups done in dicts: the same attributes, checks and results (the tables are shared
    read-only; paho never changes them)."""

    _TABLES = Properties(PacketTypes.PUBLISH)
    _IDS = {name.replace(" ", ""): ident for name, ident in _TABLES.names.items()}
    _NAMES = {ident: name for name, ident in _TABLES.names.items()}

    def __init__(self, packetType: int):  # noqa: N803 - paho's signature
        for name in ("types", "names", "properties"):
            object.__setattr__(self, name, getattr(self._TABLES, name))
        object.__setattr__(self, "packetType", packetType)

    def getIdentFromName(self, compressedName: str) -> int:  # noqa: N802, N803 - paho's names
        return self._IDS.get(compressedName, -1)

    def getNameFromIdent(self, identifier: int) -> str | None:  # noqa: N802 - paho's name
        return self._NAMES.get(identifier)

    def clear(self) -> None:
        for name in [n for n in vars(self) if n in self._IDS]:
            delattr(self, name)


if paho_packet.Properties is Properties:  # paho's PUBLISH decoder builds one per received message
    paho_packet.Properties = FastProperties

#: Bytes a :class:`BufferedClient` asks of the socket at once (a 12-lead 40 ms binary chunk is ~0.6 kB).
RECV_BYTES = 65536


class BufferedClient(paho.Client):
    """paho's client, reading the socket in blocks of up to :data:`RECV_BYTES` and handling every packet a block holds
    before it waits again.

    paho reads one packet per wake-up of its network loop, in at least three ``recv`` calls (the command byte, the
    remaining length byte by byte, the rest), each releasing and taking back the GIL the worker threads hold most of
    the time. Here one ``recv`` serves all of those while bytes are buffered, and :meth:`loop_read` goes on until the
    buffer is spent (a packet cut at the block's end is completed from the socket, as paho does). Same packets, same
    order, same callbacks; the buffer is dropped with the socket, so a reconnect starts clean.
    """

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(max(bufsize, RECV_BYTES))
            if len(data) <= bufsize:
                return data
            self._rbuf, self._rpos = data, 0
        start, self._rpos = self._rpos, min(self._rpos + bufsize, len(self._rbuf))
        return self._rbuf[start:self._rpos]

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while rc == paho.MQTT_ERR_SUCCESS and self._sock is not None and self._rpos < len(self._rbuf):
            rc = super().loop_read(max_packets)
        return rc

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()


DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
#: URL schemes of a broker address and whether they mean TLS
SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True)
class BrokerAddress:
    """Host and TCP port of an MQTT broker; ``tls`` when the address said so (``mqtts://``)."""

    host: str
    port: int = DEFAULT_PORT
    tls: bool = False

    @classmethod
    def parse(cls, text: str) -> BrokerAddress:
        """Parse ``HOST[:PORT]`` (``[v6addr]:PORT`` for IPv6), optionally as a URL ``mqtt://HOST[:PORT]`` or
        ``mqtts://HOST[:PORT]`` (TLS; default port 8883). Raises ValueError with a clear message."""
        text = text.strip()
        if not text:
            raise ValueError("broker address is empty; expected HOST:PORT")
        tls = False
        rest = text
        if "://" in text:
            scheme, _, rest = text.partition("://")
            if scheme.lower() not in SCHEMES:
                raise ValueError(f"broker address {text!r}: unknown scheme {scheme!r}; expected "
                                 f"{' or '.join(s + '://' for s in SCHEMES)}")
            tls = SCHEMES[scheme.lower()]
            rest = rest.rstrip("/")
            if "/" in rest:
                raise ValueError(f"broker address {text!r} has a path; expected {scheme}://HOST:PORT")
        if rest.startswith("["):
            host, _, after = rest[1:].partition("]")
            port_text = after.lstrip(":")
        elif rest.count(":") == 1:
            host, port_text = rest.split(":")
        else:
            host, port_text = rest, ""
        if not host:
            raise ValueError(f"broker address {text!r} has no host; expected HOST:PORT")
        try:
            port = int(port_text) if port_text else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
        except ValueError:
            raise ValueError(f"broker port {port_text!r} is not a number; expected HOST:PORT") from None
        if not 0 < port < 65536:
            raise ValueError(f"broker port {port} is outside 1..65535")
        return cls(host, port, tls)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts://' if self.tls else ''}{host}:{self.port}"


@dataclass(frozen=True)
class MqttSettings:
    """How to reach and authenticate to the broker.

    Attributes:
        broker: address of the broker.
        protocol: ``"5"`` (MQTT 5, default) or ``"3.1.1"``.
        keepalive_s: keep-alive interval (s).
        client_id: explicit client id; empty means ``<prefix>-<random>``.
        username / password: credentials (the password never comes from the command line; see the CLIs).
        tls_ca / tls_cert / tls_key: PEM files; giving one of them, ``tls_insecure`` or an ``mqtts://`` broker
            address turns TLS on (without ``tls_ca``: the system's CA certificates).
        tls_insecure: skip server hostname/certificate verification (testing only; loudly warned about).
        max_queued: bound on outgoing messages held while the broker is away; beyond it they are counted as dropped.
    """

    broker: BrokerAddress
    protocol: str = "5"
    keepalive_s: int = 30
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_insecure: bool = False
    max_queued: int = 10_000
    #: how long (s) the broker keeps a persistent session (subscriptions + queued QoS 1 messages) after a
    #: disconnect: an edge restarted within it receives what arrived meanwhile (MQTT 5; 3.1.1 brokers keep it
    #: until their own limit)
    session_expiry_s: int = 3600

    @property
    def mqtt5(self) -> bool:
        return self.protocol == "5"

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.broker.tls or self.tls_ca is not None or self.tls_cert is not None or self.tls_insecure


def read_password(password_file: Path | None, env_var: str = "BEATSSL_MQTT_PASSWORD") -> str | None:
    """The broker password from a file (first line) or the environment variable ``env_var``; None if neither."""
    if password_file is not None:
        return Path(password_file).read_text().splitlines()[0] if Path(password_file).stat().st_size else ""
    return os.environ.get(env_var)


def make_client(
    settings: MqttSettings,
    prefix: str,
    will: tuple[str, bytes] | None = None,
    session_id: str | None = None,
) -> paho.Client:
    """A configured, not yet connected paho client (a :class:`BufferedClient`).

    Session policy: a client made with ``session_id`` (an edge node) has that stable client id (or
    ``settings.client_id``) and a persistent session (MQTT 5 clean start false with ``settings.session_expiry_s``,
    connect with :func:`connect_properties`; 3.1.1 clean session false), so the broker queues its QoS 1
    subscriptions while it is down or restarting. Every other client (viewers, simulator, tests) gets
    ``prefix`` plus a random suffix and a clean session, so two of them never take each other's id. Reconnects back
    off from 1 to 2 s: a short broker outage costs about a second, not the 8 s of a long back-off.

    Args:
        settings: connection settings.
        prefix: client-id prefix used when ``settings.client_id`` is empty and there is no ``session_id``.
        will: ``(topic, payload)`` of a retained QoS 1 Last Will, or None.
        session_id: the stable client id of a persistent session (``settings.client_id`` wins when set).
    """
    persistent = session_id is not None
    client_id = settings.client_id or session_id or f"{prefix}-{uuid.uuid4().hex[:8]}"
    proto = paho.MQTTv5 if settings.mqtt5 else paho.MQTTv311
    kwargs = {} if settings.mqtt5 else {"clean_session": not persistent}
    client = BufferedClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kwargs)
    client.max_queued_messages_set(settings.max_queued)
    client.max_inflight_messages_set(200)
    client.reconnect_delay_set(min_delay=1, max_delay=2)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.tls_ca) if settings.tls_ca else None,
            certfile=str(settings.tls_cert) if settings.tls_cert else None,
            keyfile=str(settings.tls_key) if settings.tls_key else None,
            cert_reqs=ssl.CERT_NONE if settings.tls_insecure else ssl.CERT_REQUIRED,
        )
        if settings.tls_insecure:
            log.warning("TLS certificate verification is OFF (--tls-insecure): anyone can impersonate the broker")
            client.tls_insecure_set(True)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    return client


def connect_properties(settings: MqttSettings) -> Properties | None:
    """CONNECT properties for MQTT 5 (a session that survives short disconnects), None for 3.1.1."""
    if not settings.mqtt5:
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = settings.session_expiry_s
    return props


def publish_properties(settings: MqttSettings, content_type: str) -> Properties | None:
    """PUBLISH properties carrying the MQTT 5 content type, None for 3.1.1."""
    if not settings.mqtt5:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    return props
