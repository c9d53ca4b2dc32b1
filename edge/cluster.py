"""Failover between edge nodes on one broker: who is alive (membership) and who handles which device (rendezvous).

Every node of a cluster subscribes to all samples and to every node's retained health topic
(``beatssl/edge/+/health``, whose Last Will says ``offline``). :class:`Membership` keeps the set of live nodes of
the same cluster from those messages; a device belongs to the live node with the highest rendezvous weight
(:func:`rendezvous_owner`, highest random weight of ``hash(node, device)``). When a node leaves, only its devices
move (each to the next-highest node), and when it comes back it takes exactly those back — no renumbering, no
coordinator.

A node is **live** when its latest health message says ``online`` and belongs to this cluster, and **gone** when
it says anything else (``offline`` from its Last Will or its shutdown, ``failed``), or when nothing was heard from
it for ``expire_after_s`` (a will the broker lost). A retained health message (delivered on subscribing) is as old
as its ``wall_time`` says (the publisher's clock), so a stale retained ``online`` of a node that died without a
will is dropped at once instead of owning devices for ``expire_after_s``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable
from typing import Any


def weight(node: str, device: str) -> int:
    """Rendezvous weight of ``device`` on ``node``: 64 bits of BLAKE2b of both names (stable across machines)."""
    digest = hashlib.blake2b(f"{node}\0{device}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rendezvous_owner(device: str, nodes: Iterable[str]) -> str | None:
    """The node that handles ``device`` among ``nodes``: the highest :func:`weight` (ties: the larger name)."""
    return max(nodes, key=lambda node: (weight(node, device), node), default=None)


class Membership:
    """The live nodes of one cluster, seen from ``node`` (always live itself), and the owner of each device.

    Thread-safe: health messages come in on the network thread, expiry runs on the housekeeping thread and the
    owner is asked for on both.

    Args:
        node: this node's name.
        cluster: cluster name; health messages of other clusters (or none) are not members.
        expire_after_s: a node not heard from for this long (wall s) is gone.
    """

    def __init__(self, node: str, cluster: str, expire_after_s: float):
        self.node = node
        self.cluster = cluster
        self.expire_after_s = expire_after_s
        self._lock = threading.Lock()
        self._heard: dict[str, float] = {}  # other live nodes -> monotonic time their state was last confirmed
        self._owners: dict[str, str] = {}  # device -> owner, valid for the current set of live nodes
        self.changes = 0

    def __repr__(self) -> str:
        return f"Membership({self.node!r}, cluster={self.cluster!r}, live={self.live()}, changes={self.changes})"

    def live(self) -> tuple[str, ...]:
        """The live nodes, sorted (this node included)."""
        with self._lock:
            return tuple(sorted({self.node, *self._heard}))

    def owner(self, device: str) -> str:
        """The live node that handles ``device`` now."""
        with self._lock:
            owner = self._owners.get(device)
            if owner is None:
                owner = self._owners[device] = rendezvous_owner(device, {self.node, *self._heard})
            return owner

    def observe(self, node: str, health: dict[str, Any], retained: bool = False, now: float | None = None,
                now_wall: float | None = None) -> bool:
        """Take one health message of ``node``; True when the set of live nodes changed.

        Args:
            health: the decoded message (``state``, ``cluster``, ``wall_time``: publisher's epoch s).
            retained: the broker delivered a stored message (on subscribing): its age is judged by ``wall_time``.
            now / now_wall: monotonic and epoch clocks (default: now).
        """
        if node == self.node:
            return False
        now = time.monotonic() if now is None else now
        age_s = 0.0
        if retained:
            sent = health.get("wall_time")
            wall = time.time() if now_wall is None else now_wall
            age_s = wall - sent if isinstance(sent, int | float) else float("inf")
        alive = (health.get("state") == "online" and health.get("cluster") == self.cluster
                 and age_s <= self.expire_after_s)
        with self._lock:
            known = node in self._heard
            if alive:
                self._heard[node] = now - max(0.0, age_s)
            else:
                self._heard.pop(node, None)
            return self._changed(known != alive)

    def expire(self, now: float | None = None) -> bool:
        """Drop nodes not heard from for ``expire_after_s``; True when the set of live nodes changed."""
        now = time.monotonic() if now is None else now
        with self._lock:
            old = [n for n, t in self._heard.items() if now - t > self.expire_after_s]
            for n in old:
                del self._heard[n]
            return self._changed(bool(old))

    def _changed(self, changed: bool) -> bool:
        if changed:
            self._owners.clear()
            self.changes += 1
        return changed
