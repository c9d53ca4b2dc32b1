"""Shared fixtures: the real data folder beside the checkout, a real mosquitto on a free loopback port, and the
shipped engines of a default edge."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.transport.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels() -> None:
    """The signal kernels compiled once, first, into numba's on-disk cache: every edge a test starts (in process or
    as a subprocess) then loads them in well under a second instead of compiling them (10-20 s on a fresh clone)."""
    from edge.pipeline.warmup import warm_up

    warm_up()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data`` (real PhysioNet WFDB records); tests that need it skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    return DATA


@pytest.fixture(scope="session")
def edge_engines():
    """The inference plan and engines of a default edge with the shipped wave-seg and beat-cls (loaded once)."""
    from edge.app import EdgeConfig, load_plan
    from edge.transport.mqtt import BrokerAddress, MqttSettings

    engines = (REPO / "engines" / "wave-seg", REPO / "engines" / "beat-cls")
    return load_plan(EdgeConfig(mqtt=MqttSettings(BrokerAddress("127.0.0.1", 1)), engines=engines))


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh mosquitto (MQTT 5) on 127.0.0.1:<free port>, stopped after the test."""
    with EmbeddedBroker(prefer="mosquitto-only") as b:
        yield b
