"""The wire protocol (version 1), defined once: :mod:`edge.protocol.topics` builds and parses every topic string,
:mod:`edge.protocol.payloads` encodes, decodes and validates every payload. See docs/protocol.md."""

from edge.protocol.payloads import (
    BINARY_HEADER,
    BINARY_MAGIC,
    CONTENT_TYPE_BINARY,
    CONTENT_TYPE_JSON,
    PROTOCOL_VERSION,
    Limits,
    ProtocolError,
    SamplesMessage,
    decode_samples,
    dumps,
    encode_samples_binary,
    encode_samples_json,
)
from edge.protocol.topics import (
    SAMPLES_SUBSCRIPTION,
    TRUTH_SUBSCRIPTION,
    beats_topic,
    device_from_topic,
    device_hash,
    errors_topic,
    health_topic,
    node_errors_topic,
    output_subscription,
    rhythm_topic,
    samples_topic,
    shared_samples_subscription,
    status_topic,
    truth_topic,
    valid_device_id,
)

__all__ = [
    "BINARY_HEADER", "BINARY_MAGIC", "CONTENT_TYPE_BINARY", "CONTENT_TYPE_JSON", "PROTOCOL_VERSION", "Limits",
    "ProtocolError", "SamplesMessage", "decode_samples", "dumps", "encode_samples_binary", "encode_samples_json",
    "SAMPLES_SUBSCRIPTION", "TRUTH_SUBSCRIPTION", "beats_topic", "device_from_topic", "device_hash", "errors_topic",
    "health_topic", "node_errors_topic", "output_subscription", "rhythm_topic", "samples_topic",
    "shared_samples_subscription", "status_topic", "truth_topic", "valid_device_id",
]
