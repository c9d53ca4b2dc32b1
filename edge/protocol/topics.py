"""Topics: every topic string of the project is built or parsed here (see docs/protocol.md)."""

from __future__ import annotations

import re
import zlib

SAMPLES_SUBSCRIPTION = "ecg/+/samples"


def shared_samples_subscription(group: str) -> str:
    """MQTT 5 shared subscription of the samples topic: the broker spreads messages over the group's members."""
    return f"$share/{group}/{SAMPLES_SUBSCRIPTION}"
TRUTH_SUBSCRIPTION = "sim/+/truth"

_DEVICE_ID_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


def samples_topic(device_id: str) -> str:
    """Topic a device publishes its samples on."""
    return f"ecg/{device_id}/samples"


def beats_topic(device_id: str) -> str:
    """Topic the edge publishes one message per detected beat on."""
    return f"beatssl/{device_id}/beats"


def rhythm_topic(device_id: str) -> str:
    """Topic the edge publishes rolling rhythm labels on."""
    return f"beatssl/{device_id}/rhythm"


def episodes_topic(device_id: str) -> str:
    """Topic the edge publishes rhythm episodes on (one message when an episode starts, one when it ends)."""
    return f"beatssl/{device_id}/episodes"


def alarms_topic(device_id: str) -> str:
    """Topic the edge publishes alarm raise / clear events on (retained: the last one carries the active set)."""
    return f"beatssl/{device_id}/alarms"


def alarm_ack_topic(device_id: str) -> str:
    """Topic an operator's station publishes alarm acknowledgements on (``{"type": "vt"}``)."""
    return f"beatssl/{device_id}/alarms/ack"


#: What an edge subscribes to for acknowledgements of its devices' alarms.
ALARM_ACK_SUBSCRIPTION = "beatssl/+/alarms/ack"


def status_topic(device_id: str) -> str:
    """Topic the edge publishes a device's stream state on (retained)."""
    return f"beatssl/{device_id}/status"


def is_status(topic: str) -> bool:
    """True for a ``beatssl/<id>/status`` topic (an edge reads a device's retained status when it takes it up)."""
    return topic.startswith("beatssl/") and topic.endswith("/status") and topic.count("/") == 2


def errors_topic(device_id: str) -> str:
    """Topic the edge publishes a device's input errors on."""
    return f"beatssl/{device_id}/errors"


def health_topic(node: str) -> str:
    """Retained health topic of one edge node; its Last Will says ``"offline"``."""
    return f"beatssl/edge/{node}/health"


#: Every node's health (a cluster node and a supervisor subscribe to it).
HEALTH_SUBSCRIPTION = "beatssl/edge/+/health"


def node_from_health_topic(topic: str) -> str | None:
    """The node name of a ``beatssl/edge/<node>/health`` topic, else None."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[:2] != ["beatssl", "edge"] or parts[3] != "health":
        return None
    return parts[2] if valid_device_id(parts[2]) else None


def node_errors_topic(node: str) -> str:
    """Topic of errors that belong to no valid device (bad topics, overload) on one edge node."""
    return f"beatssl/edge/{node}/errors"


def truth_topic(device_id: str) -> str:
    """Topic the simulator publishes reference annotations on."""
    return f"sim/{device_id}/truth"


def output_subscription(kind: str = "+") -> str:
    """Subscription pattern for the edge's per-device outputs of one kind (``beats``, ``rhythm`` …)."""
    return f"beatssl/+/{kind}"


def valid_device_id(device_id: str) -> bool:
    """True when ``device_id`` is safe to use in topics: 1–64 chars of ``[A-Za-z0-9_.:@-]``."""
    return bool(_DEVICE_ID_RE.match(device_id))


def device_hash(device_id: str) -> int:
    """Stable (process- and machine-independent) hash of a device id: CRC-32 of its UTF-8 bytes. Workers split devices
    with it (``--partition k/N`` keeps ``device_hash(id) % N == k``), so every worker must compute the same value."""
    return zlib.crc32(device_id.encode())


def device_from_topic(topic: str) -> str | None:
    """The device id of an ``ecg/<id>/samples``, ``beatssl/<id>/<kind>``, ``beatssl/<id>/alarms/ack`` or
    ``sim/<id>/truth`` topic, else None."""
    parts = topic.split("/")
    if len(parts) == 4 and parts[0] == "beatssl" and parts[2:] == ["alarms", "ack"] and parts[1] != "edge":
        return parts[1]
    if len(parts) != 3 or parts[0] not in ("ecg", "beatssl", "sim") or parts[1] == "edge":
        return None
    return parts[1]


def is_alarm_ack(topic: str) -> bool:
    """True for a ``beatssl/<id>/alarms/ack`` topic."""
    return topic.endswith("/alarms/ack") and topic.startswith("beatssl/")
