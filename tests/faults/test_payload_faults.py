"""Malformed samples payloads: each is a protocol error with its code, never an exception of another kind (which the
edge would report as ``internal`` with a traceback). Every case here raised OverflowError, ValueError or
RecursionError, or was accepted, before the decoder checked it."""

from __future__ import annotations

import pytest

from edge import protocol as proto

GOOD = b'"fs":250,"leads":["II"],"data":[[0.1,0.2]]'


def payload(fields: str) -> bytes:
    return b'{"v":1,' + fields.encode() + b"," + GOOD + b"}"


@pytest.mark.parametrize(("fields", "code"), [
    ('"seq":1e400,"t0":0', "malformed"),        # OverflowError before
    ('"seq":1.5,"t0":0', "malformed"),          # silently truncated to 1 before
    ('"seq":-5,"t0":0', "malformed"),           # accepted before; the binary form is u32
    ('"seq":4294967296,"t0":0', "malformed"),   # beyond u32
    ('"seq":true,"t0":0', "malformed"),
    ('"seq":1,"t0":1e308', "bad_time"),         # accepted before, then OverflowError in the stream
    ('"seq":1,"t0":-1e12', "bad_time"),
    ('"seq":1,"t0":"soon"', "malformed"),
])
def test_bad_seq_and_t0_are_protocol_errors(fields: str, code: str) -> None:
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode_samples(payload(fields))
    assert err.value.code == code


@pytest.mark.parametrize("gain", ['"x"', "[1]", "{}", "1e400", "-3", "0"])
def test_bad_gain_is_malformed(gain: str) -> None:
    body = b'{"v":1,"seq":1,"t0":0,"fs":250,"leads":["II"],"units":"adu","gain":' + gain.encode() + b',"data":[[1,2]]}'
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode_samples(body)
    assert err.value.code == "malformed"


def test_deep_nesting_is_malformed_not_recursion_error() -> None:
    body = b'{"v":1,"seq":1,"t0":0,"fs":250,"leads":["II"],"data":' + b"[" * 50_000 + b"]" * 50_000 + b"}"
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode_samples(body)
    assert err.value.code == "malformed"


def test_binary_t0_and_gain_are_checked() -> None:
    import numpy as np

    msg = proto.SamplesMessage(3, 250.0, ("II",), 1e300, np.zeros((10, 1), np.float32))
    with pytest.raises(proto.ProtocolError) as err:
        proto.decode_samples(proto.encode_samples_binary(msg))
    assert err.value.code == "bad_time"
    good = proto.decode_samples(proto.encode_samples_binary(proto.SamplesMessage(3, 250.0, ("II",), 12.5,
                                                                                  np.ones((10, 1), np.float32))))
    assert good.seq == 3 and good.t0_s == 12.5 and float(good.data_mv[0, 0]) == 1.0
