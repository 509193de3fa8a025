"""Bearer-token authentication, the per-user rate limits on actions, and the throttle on refusal audit rows.

Tokens are compared in constant time: the presented token and every configured token are hashed
(SHA-256, so lengths do not leak) and compared with `hmac.compare_digest`, always against *all*
configured tokens (no early exit), so timing tells nothing about which or how much of a token matched.

Rate limits are token buckets per user and class of action (`RateLimits`), and the audit throttle
(`AuditThrottle`) caps how many rows one client address (failed logins) or one user (rate-limited
requests) writes per window, counting the rows it leaves out. Both live in memory: they reset on
restart and are per process (the service is one process by design: one SUMO twin). The throttle keeps
at most `MAX_KEYS` keys; past that, new keys share one (so a flood from many addresses stays bounded).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from citysignal.service.config import Role, Settings, TokenEntry

Clock = Callable[[], float]


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


class TokenBucket:
    """Per key, a bucket of `limit` tokens refilled at `limit` per `window_s` seconds: a burst, then a steady rate."""

    def __init__(self, limit: int, window_s: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.rate = limit / window_s
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when counted)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for `key`: 0.0 when there was one, else the seconds until there is."""
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (float(self.limit), now))
            tokens = min(float(self.limit), tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return max(0.001, (1.0 - tokens) / self.rate)


class RateLimits:
    """The service's buckets, one per class of action, keyed by user (each user has one token)."""

    def __init__(self, settings: Settings, clock: Clock = time.monotonic) -> None:
        self.classes = {
            "override": TokenBucket(settings.override_limit, settings.override_window_s, clock),
            "controller": TokenBucket(settings.controller_limit, settings.controller_window_s, clock),
        }
        self.refusal_audit = AuditThrottle(settings.refusal_audit_limit, settings.refusal_audit_window_s, clock)

    def take(self, action_class: str, user: str) -> float:
        return self.classes[action_class].take(user)


class AuditThrottle:
    """At most `limit` audit rows per key in any `window_s` seconds; the rows left out are counted."""

    MAX_KEYS = 4096
    OVERFLOW_KEY = "(other)"

    def __init__(self, limit: int, window_s: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._rows: dict[str, deque[float]] = {}
        self._suppressed: dict[str, int] = {}
        self._swept = -float("inf")
        self._lock = threading.Lock()

    def admit(self, key: str) -> int | None:
        """None: leave this row out (it is counted). Else write it, noting the returned number left out before it."""
        now = self._clock()
        with self._lock:
            if key not in self._rows and len(self._rows) >= self.MAX_KEYS:
                if now - self._swept >= self.window_s:  # at most one sweep per window: a flood stays cheap
                    self._swept = now
                    self._forget_idle(now)
                if len(self._rows) >= self.MAX_KEYS:
                    key = self.OVERFLOW_KEY
            rows = self._rows.setdefault(key, deque())
            while rows and now - rows[0] >= self.window_s:
                rows.popleft()
            if len(rows) >= self.limit:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            rows.append(now)
            return self._suppressed.pop(key, 0)

    def _forget_idle(self, now: float) -> None:
        idle = [k for k, rows in self._rows.items()
                if k not in self._suppressed and (not rows or now - rows[-1] >= self.window_s)]  # fmt: skip
        for k in idle:
            del self._rows[k]
