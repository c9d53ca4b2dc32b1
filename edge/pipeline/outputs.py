"""What a device's pipeline hands to the application to publish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Output:
    """A message to publish: ``kind`` is the topic kind (beats, rhythm, episodes, alarms, status, errors)."""

    kind: str
    payload: dict[str, Any]
    retain: bool = False
