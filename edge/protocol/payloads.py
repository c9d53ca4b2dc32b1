"""Payloads of the wire protocol (version 1), defined once. See docs/protocol.md.

Every topic string in the project is built by the functions here, and every ``ecg/<device>/samples`` payload is
encoded by :func:`encode_samples_json` / :func:`encode_samples_binary` and decoded by :func:`decode_samples`.

Input payloads come in two encodings:

* JSON (MQTT 5 content type ``application/json``, first byte ``{``)::

    {"v": 1, "seq": 17, "fs": 360.0, "leads": ["MLII", "V5"], "t0": 12.5,
     "units": "mV" | "adu", "gain": 200.0, "data": [[...lead 0...], [...lead 1...]]}

  ``data`` is lead-major: ``data[i]`` holds the samples of ``leads[i]``. ``t0`` is the device time of the first
  sample (s). With ``units == "adu"`` samples are integers and ``gain`` is ADC units per mV.
* Binary (content type ``application/vnd.beatssl.ecg``, first byte ``0xEC``): a little-endian header followed by
  the lead names and int16 samples, interleaved sample-major (``s0l0 s0l1 … s1l0 …``) — see :data:`BINARY_HEADER`.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from edge.ecg import canonical_lead

PROTOCOL_VERSION = 1

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_BINARY = "application/vnd.beatssl.ecg"
BINARY_MAGIC = 0xEC

#: magic u8, version u8, n_leads u8, flags u8, seq u32, fs f32, gain f32 (adu/mV), t0 f64 (s),
#: n_samples u32, lead-name bytes u16 — then the comma-separated lead names (ASCII), then int16 samples.
BINARY_HEADER = struct.Struct("<BBBBIffdIH")


class ProtocolError(ValueError):
    """A payload that breaks the protocol. ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every incoming payload (configurable on the command line)."""

    max_payload_bytes: int = 256 * 1024
    max_leads: int = 16
    min_fs_hz: float = 50.0
    max_fs_hz: float = 2000.0
    max_abs_mv: float = 20.0
    #: largest accepted ``|t0|`` (s): device time may be an epoch time (~1.7e9 s) but not a float that overflows
    #: sample arithmetic (``t0 * fs`` must stay an exact integer below 2**53)
    max_abs_t0_s: float = 1e11


@dataclass
class SamplesMessage:
    """One decoded chunk of samples from a device.

    Attributes:
        seq: sequence number, +1 per chunk, starting anywhere.
        fs_hz: sampling rate of ``data`` (Hz).
        leads: canonical lead names, one per column of ``data``.
        t0_s: device time of the first sample (s).
        data_mv: samples in mV, shape ``(n_samples, n_leads)``, float32.
    """

    seq: int
    fs_hz: float
    leads: tuple[str, ...]
    t0_s: float
    data_mv: np.ndarray = field(repr=False)

    @property
    def n_samples(self) -> int:
        return int(self.data_mv.shape[0])


def encode_samples_json(msg: SamplesMessage, decimals: int = 4) -> bytes:
    """Encode a chunk as a JSON payload in mV (lead-major ``data``)."""
    data = np.round(np.asarray(msg.data_mv, dtype=np.float64).T, decimals).tolist()
    return json.dumps(
        {
            "v": PROTOCOL_VERSION,
            "seq": int(msg.seq),
            "fs": float(msg.fs_hz),
            "leads": list(msg.leads),
            "t0": float(msg.t0_s),
            "units": "mV",
            "data": data,
        },
        separators=(",", ":"),
    ).encode()


def encode_samples_binary(msg: SamplesMessage, gain_adu_per_mv: float = 200.0) -> bytes:
    """Encode a chunk as a binary payload: int16 samples at ``gain_adu_per_mv`` (200 adu/mV = 5 µV/LSB)."""
    names = ",".join(msg.leads).encode("ascii")
    adu = np.clip(np.round(np.asarray(msg.data_mv, dtype=np.float64) * gain_adu_per_mv), -32768, 32767)
    header = BINARY_HEADER.pack(
        BINARY_MAGIC, PROTOCOL_VERSION, len(msg.leads), 0, int(msg.seq) & 0xFFFFFFFF,
        float(msg.fs_hz), float(gain_adu_per_mv), float(msg.t0_s), msg.n_samples, len(names),
    )
    return header + names + adu.astype("<i2").tobytes()


def decode_samples(payload: bytes, limits: Limits | None = None, content_type: str | None = None) -> SamplesMessage:
    """Decode and validate a samples payload (JSON or binary, told apart by content type or first byte).

    Raises:
        ProtocolError: with ``code`` one of ``oversize``, ``malformed``, ``unknown_version``, ``bad_fs``,
            ``bad_leads``, ``lead_count``, ``non_finite``, ``bad_time``, ``amplitude``.
    """
    limits = limits or Limits()
    if len(payload) > limits.max_payload_bytes:
        raise ProtocolError("oversize", f"payload of {len(payload)} B exceeds {limits.max_payload_bytes} B")
    if not payload:
        raise ProtocolError("malformed", "empty payload")
    binary = content_type == CONTENT_TYPE_BINARY or (content_type != CONTENT_TYPE_JSON and payload[0] == BINARY_MAGIC)
    if binary:
        msg, peak = _decode_binary(payload)
    else:
        msg = _decode_json(payload)
        peak = float(np.abs(msg.data_mv).max()) if msg.n_samples and np.isfinite(msg.data_mv).all() else None
    _validate(msg, limits, peak)
    return msg


def _decode_json(payload: bytes) -> SamplesMessage:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError("malformed", f"not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("malformed", "JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed", "JSON payload is not an object")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("unknown_version", f"protocol version {obj.get('v')!r} is not {PROTOCOL_VERSION}")
    try:
        seq = _seq(obj["seq"])
        fs = _number(obj["fs"], "fs")
        leads = obj["leads"]
        t0 = _number(obj.get("t0", 0.0), "t0")
        units = obj.get("units", "mV")
        raw = obj["data"]
    except KeyError as exc:
        raise ProtocolError("malformed", f"missing field {exc}") from None
    if not isinstance(leads, list) or not all(isinstance(name, str) for name in leads):
        raise ProtocolError("bad_leads", "'leads' must be a list of strings")
    if units not in ("mV", "adu"):
        raise ProtocolError("malformed", f"units {units!r} is neither 'mV' nor 'adu'")
    if not isinstance(raw, list) or len(raw) != len(leads):
        n = len(raw) if isinstance(raw, list) else "no"
        raise ProtocolError("lead_count", f"{n} data rows for {len(leads)} leads")
    try:
        data = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise ProtocolError("malformed", "data rows are not equal-length lists of numbers") from None
    if data.ndim != 2:
        raise ProtocolError("malformed", "data rows are not equal-length lists of numbers")
    if units == "adu":
        gain = obj.get("gain")
        gain = _number(gain, "gain") if gain is not None else 0.0
        if not (gain > 0 and math.isfinite(gain)):
            raise ProtocolError("malformed", "units 'adu' needs a positive 'gain' (adu per mV)")
        data = data / gain
    return SamplesMessage(seq, fs, _canonical(tuple(leads)), t0, data.T.astype(np.float32))


def _decode_binary(payload: bytes) -> tuple[SamplesMessage, float | None]:
    """The chunk and its largest ``|sample|`` (mV; None when a sample is not finite or there is none), taken from the
    int16 samples: float32 rounding is monotonic, so it is the largest ``|sample|`` of the decoded data."""
    if len(payload) < BINARY_HEADER.size:
        raise ProtocolError("malformed", f"binary payload shorter than its {BINARY_HEADER.size} B header")
    magic, version, n_leads, _flags, seq, fs, gain, t0, n, name_len = BINARY_HEADER.unpack_from(payload)
    if magic != BINARY_MAGIC:
        raise ProtocolError("malformed", f"bad magic byte 0x{magic:02x}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError("unknown_version", f"protocol version {version} is not {PROTOCOL_VERSION}")
    off = BINARY_HEADER.size
    names = _binary_leads(payload[off : off + name_len])
    if len(names) != n_leads:
        raise ProtocolError("lead_count", f"{len(names)} lead names for n_leads={n_leads}")
    off += name_len
    expected = off + 2 * n * n_leads
    if len(payload) != expected:
        raise ProtocolError("malformed", f"binary payload is {len(payload)} B, header says {expected} B")
    if not (gain > 0 and math.isfinite(gain)):
        raise ProtocolError("malformed", "binary gain must be positive and finite")
    adu = np.frombuffer(payload, dtype="<i2", offset=off).reshape(n, n_leads)
    # adu / gain in float64, rounded once to float32 on the way out (no float64 temporary)
    data = np.divide(adu, gain, out=np.empty((n, n_leads), dtype=np.float32), dtype=np.float64, casting="same_kind")
    peak = None
    if adu.size:
        peak = float(np.float32(max(int(adu.max()), -int(adu.min())) / gain))
        peak = peak if math.isfinite(peak) else None
    return SamplesMessage(seq, float(fs), names, float(t0), data), peak


@functools.lru_cache(maxsize=256)  # a name field is at most 64 KiB: at most 16 MiB held
def _binary_leads(raw: bytes) -> tuple[str, ...]:
    """Canonical lead names of a binary payload's comma-separated ASCII name field; cached on the raw bytes, since a
    device sends the same names with every chunk."""
    try:
        names = raw.decode("ascii").split(",") if raw else []
    except UnicodeDecodeError:
        raise ProtocolError("bad_leads", "lead names are not ASCII") from None
    return _canonical(tuple(names))


def _seq(value: object) -> int:
    """A chunk's ``seq``: an integer in the binary header's u32 range (``1.5``, ``-5``, ``1e400`` are malformed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("malformed", f"seq must be an integer, not {type(value).__name__}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ProtocolError("malformed", f"seq must be an integer, not {value!r}")
    if not 0 <= value <= 0xFFFFFFFF:
        raise ProtocolError("malformed", f"seq {value!r} outside 0..2**32-1")
    return int(value)


def _number(value: object, name: str) -> float:
    """A JSON number field as float (bools, strings, lists and overflowing numbers are malformed)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProtocolError("malformed", f"{name} must be a number, not {type(value).__name__}")
    try:
        return float(value)
    except OverflowError:
        raise ProtocolError("malformed", f"{name} is too large") from None


@functools.lru_cache(maxsize=1024)
def _canonical(names: tuple[str, ...]) -> tuple[str, ...]:
    """Canonical lead names; cached, since a device sends the same names with every chunk."""
    return tuple(canonical_lead(name) for name in names)


@functools.lru_cache(maxsize=1024)
def _leads_ok(leads: tuple[str, ...]) -> bool:
    """Lead names unique and non-empty; cached, since a device sends the same names with every chunk."""
    return len(set(leads)) == len(leads) and all(leads)


def _validate(msg: SamplesMessage, limits: Limits, peak_mv: float | None) -> None:
    """Check a decoded chunk against ``limits``; ``peak_mv``: its largest ``|sample|`` (None: not all finite)."""
    if not (math.isfinite(msg.fs_hz) and limits.min_fs_hz <= msg.fs_hz <= limits.max_fs_hz):
        raise ProtocolError("bad_fs", f"fs {msg.fs_hz} Hz outside [{limits.min_fs_hz}, {limits.max_fs_hz}] Hz")
    if not 1 <= len(msg.leads) <= limits.max_leads:
        raise ProtocolError("lead_count", f"{len(msg.leads)} leads, expected 1..{limits.max_leads}")
    if not _leads_ok(msg.leads):
        raise ProtocolError("bad_leads", f"lead names must be unique and non-empty: {list(msg.leads)}")
    if not math.isfinite(msg.t0_s):
        raise ProtocolError("non_finite", "t0 is not finite")
    if abs(msg.t0_s) > limits.max_abs_t0_s:
        raise ProtocolError("bad_time", f"|t0| {abs(msg.t0_s):.3g} s exceeds {limits.max_abs_t0_s:.0e} s")
    if msg.n_samples == 0:
        raise ProtocolError("malformed", "chunk holds no samples")
    if peak_mv is None:
        raise ProtocolError("non_finite", "samples contain NaN or inf")
    if peak_mv > limits.max_abs_mv:
        raise ProtocolError("amplitude", f"|sample| {peak_mv:.1f} mV exceeds {limits.max_abs_mv} mV")


def decode_alarm_ack(payload: bytes) -> str:
    """The alarm type of an acknowledgement payload ``{"v": 1, "type": "vt"}`` (checked against the known types by
    the device's alarm monitor).

    Raises:
        ProtocolError: ``malformed`` (not a JSON object with a string ``type`` of at most 32 characters).
    """
    if len(payload) > 1024:
        raise ProtocolError("malformed", "acknowledgement larger than 1 KiB")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ProtocolError("malformed", "acknowledgement is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("type"), str) or not 0 < len(obj["type"]) <= 32:
        raise ProtocolError("malformed", 'acknowledgement must be {"type": "<alarm type>"}')
    return obj["type"]


#: How a device's stream was taken up again, as its status says (``resumed_by``): ``restart`` — by the node that
#: had it (the same node name: a restarted worker or process), ``handover`` — by another node of the cluster.
RESUMED_BY = ("restart", "handover")
#: Status states of a running stream: a retained status in one of them was left by an owner that stopped mid-stream.
RUNNING_STATES = ("online", "flat")


@dataclass(frozen=True)
class Resume:
    """The gap of a device's last resume, as its status states it from then on (docs/protocol.md, status).

    Attributes:
        by: one of :data:`RESUMED_BY`.
        gap_s: device-clock seconds of signal that no owner processed: from just after ``t_last_s`` of the retained
            status the previous owner left (the last sample it had processed when it last published one) to the
            first sample processed now; 0 when nothing was lost, negative when both owners processed that much.
        at_s: device time of the first sample processed now (s).
    """

    by: str
    gap_s: float
    at_s: float

    def fields(self) -> dict[str, object]:
        """The status fields of this resume."""
        return {"resumed_by": self.by, "resume_gap_s": round(self.gap_s, 4), "resumed_at_s": round(self.at_s, 4)}


#: The status fields of a stream that was not resumed (a device new to its owner, or back after silence).
NO_RESUME: dict[str, object] = {"resumed_by": None, "resume_gap_s": None, "resumed_at_s": None}


def resume_from_status(previous: bytes, node: str, first_s: float) -> Resume | None:
    """The resume a new owner ``node`` makes of a device whose first sample it processed at device time
    ``first_s`` (s), given the retained status ``previous`` the device's last owner left; None when that status
    says the stream was not running (``stale``, or no ``t_last_s``), or is not a status message.
    """
    try:
        status = json.loads(previous)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return None
    if not isinstance(status, dict) or status.get("state") not in RUNNING_STATES:
        return None
    t_last, fs, owner = status.get("t_last_s"), status.get("fs"), status.get("node")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (t_last, fs)) or fs <= 0:
        return None
    by = "restart" if owner == node else "handover"
    return Resume(by, first_s - (t_last + 1.0 / fs), first_s)


def dumps(obj: dict) -> bytes:
    """Serialise an output message (compact JSON, UTF-8)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()
