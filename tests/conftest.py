"""Shared fixtures: the real data folder beside the checkout and a real mosquitto on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.transport.broker import EmbeddedBroker

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``../shared/data`` (real PhysioNet WFDB records); tests that need it skip when it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"real data folder {DATA} is absent")
    return DATA


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh mosquitto (MQTT 5) on 127.0.0.1:<free port>, stopped after the test."""
    with EmbeddedBroker(prefer="mosquitto-only") as b:
        yield b
