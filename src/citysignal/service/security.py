"""Bearer-token authentication and the per-user rate limit on overrides.

Tokens are compared in constant time: the presented token and every configured token are hashed
(SHA-256, so lengths do not leak) and compared with `hmac.compare_digest`, always against *all*
configured tokens (no early exit), so timing tells nothing about which or how much of a token matched.

The rate limiter is a sliding window per user, in memory: it resets on restart and is per process
(the service is one process by design: one SUMO twin).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from citysignal.service.config import Role, TokenEntry


@dataclass(frozen=True)
class Principal:
    """Who is calling: the audit log's `actor` and `role`."""

    name: str
    role: Role


ANONYMOUS = Principal("anonymous", Role.viewer)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenRegistry:
    def __init__(self, entries: tuple[TokenEntry, ...]) -> None:
        self._entries = [(_digest(e.token), Principal(e.name, e.role)) for e in entries if e.token]

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal holding `token`, or None; constant time in which token (if any) matches."""
        if not token:
            return None
        presented = _digest(token)
        found: Principal | None = None
        for digest, principal in self._entries:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class RateLimiter:
    """At most `limit` events per key within any `window_s` seconds."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count one event for `key`; 0.0 when allowed, else the seconds until one would be."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and now - hits[0] >= self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return max(0.001, self.window_s - (now - hits[0]))
            hits.append(now)
            return 0.0
