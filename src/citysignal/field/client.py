"""The central side's SNMP manager: GET and SET per intersection context, concurrently, on one address.

Addresses: `snmp://[COMMUNITY@]HOST:PORT` is SNMP v2c (community `public` unless given; intersection
`k` is reached as `COMMUNITY@k`); `snmpv3://USER@HOST:PORT` is SNMPv3 authPriv (HMAC-SHA-256, AES-128)
with the passphrases from the environment (`CITYSIGNAL_SNMP_AUTH_KEY`, `CITYSIGNAL_SNMP_PRIV_KEY`),
never from the command line, and intersection `k` is context `str(k)`. `?timeout=SECONDS` sets how
long a request waits for its answer (default `DEFAULT_TIMEOUT_S`: a second's budget for a poll).

Requests go through pysnmp's command generator with numeric OIDs and no MIB look-ups (the MIB
resolution of the high-level API costs more than the request). One try per request, no retries: a
poll that times out is a missed poll, and the next second brings a fresh one. Writes are sent without
waiting for their answers (the next second's refresh repeats them anyway).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from pysnmp.entity import config
from pysnmp.entity.engine import SnmpEngine
from pysnmp.entity.rfc3413 import cmdgen
from pysnmp.hlapi.v3arch.asyncio import CommunityData, UdpTransportTarget, UsmUserData
from pysnmp.hlapi.v3arch.asyncio.cmdgen import LCD
from pysnmp.proto import rfc1902

from citysignal.errors import UserError
from citysignal.field.agent import V3User
from citysignal.field.ntcip import OID

AUTH_ENV, PRIV_ENV = "CITYSIGNAL_SNMP_AUTH_KEY", "CITYSIGNAL_SNMP_PRIV_KEY"
T = TypeVar("T")
DEFAULT_TIMEOUT_S = 0.5
TIMER_S = 0.02  # how often pysnmp checks its requests for timeouts (its default, 0.1 s, is a poll's budget)


@dataclass(frozen=True)
class FieldAddress:
    host: str
    port: int
    community: str = "public"
    user: V3User | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S  # how long a request waits for its answer

    def __str__(self) -> str:
        scheme, who = ("snmpv3", self.user.name) if self.user is not None else ("snmp", self.community)
        return f"{scheme}://{who}@{self.host}:{self.port}"


def v3_user(name: str) -> V3User:
    """An SNMPv3 user whose passphrases come from the environment."""
    auth, priv = os.environ.get(AUTH_ENV, ""), os.environ.get(PRIV_ENV, "")
    if len(auth) < 8 or len(priv) < 8:
        raise UserError(f"SNMPv3 needs {AUTH_ENV} and {PRIV_ENV} set, 8 characters or more each")
    return V3User(name, auth, priv)


def parse_address(uri: str) -> FieldAddress:
    """`snmp://[COMMUNITY@]HOST:PORT` or `snmpv3://USER@HOST:PORT`, optionally `?timeout=SECONDS` (module docstring)."""
    parts = urlsplit(uri)
    try:
        port = parts.port
        query = dict(parse_qsl(parts.query, strict_parsing=bool(parts.query)))
        timeout = float(query.pop("timeout", DEFAULT_TIMEOUT_S))
    except ValueError:
        port = None
    if parts.scheme not in ("snmp", "snmpv3") or not parts.hostname or port is None or query:
        raise UserError(f"--field takes snmp://HOST:PORT or snmpv3://USER@HOST:PORT (?timeout=S), got '{uri}'")
    if not 0.01 <= timeout <= 10:
        raise UserError(f"the field timeout is in seconds, 0.01 to 10, got {timeout:g}")
    if parts.scheme == "snmpv3":
        if not parts.username:
            raise UserError(f"an snmpv3 address names its user: snmpv3://USER@HOST:PORT, got '{uri}'")
        return FieldAddress(parts.hostname, port, user=v3_user(parts.username), timeout_s=timeout)
    return FieldAddress(parts.hostname, port, community=parts.username or "public", timeout_s=timeout)


class Manager:
    """GET and SET on the contexts `0 .. n-1` of one agent, from synchronous code (it owns an event loop)."""

    def __init__(self, address: FieldAddress, n_contexts: int) -> None:
        self.address = address
        self.loop = asyncio.new_event_loop()
        self.engine = SnmpEngine()
        self._targets = self.run(self._configure(n_contexts, address.timeout_s))
        self.engine.transport_dispatcher.set_timer_resolution(TIMER_S)
        self.set_failures = 0
        self._get = cmdgen.GetCommandGenerator()
        self._set = cmdgen.SetCommandGenerator()

    async def _configure(self, n_contexts: int, timeout_s: float) -> list[tuple[str, bytes]]:
        """Per context: pysnmp's target name and the context name (inside the loop: transports bind to it)."""
        address = self.address
        target = await UdpTransportTarget.create((address.host, address.port), timeout=timeout_s, retries=0)
        targets = []
        for k in range(n_contexts):
            auth: CommunityData | UsmUserData
            if address.user is not None:
                user = address.user
                auth = UsmUserData(user.name, user.auth_key, user.priv_key,
                                   authProtocol=config.USM_AUTH_HMAC192_SHA256,
                                   privProtocol=config.USM_PRIV_CFB128_AES)  # fmt: skip
                context = str(k).encode()
            else:
                auth = CommunityData(f"{address.community}@{k}", mpModel=1)
                context = b""
            addr_name, _ = LCD.configure(self.engine, auth, target, context)
            targets.append((addr_name, context))
        return targets

    def run(self, job: Awaitable[T]) -> T:
        return self.loop.run_until_complete(job)

    def _send(self, generator: Any, k: int, var_binds: list[tuple[Any, Any]]) -> asyncio.Future[list[Any] | None]:
        future: asyncio.Future[list[Any] | None] = self.loop.create_future()

        def done(engine: Any, handle: Any, indication: Any, status: Any, index: Any, answer: Any, ctx: Any) -> None:
            if not future.done():
                future.set_result(None if indication or status else [v for _, v in answer])

        addr_name, context = self._targets[k]
        generator.send_varbinds(self.engine, addr_name, None, context, var_binds, done)
        return future

    def get(self, requests: dict[int, Sequence[OID]]) -> dict[int, list[Any] | None]:
        """Per context, the values of its OIDs in order, or None when no (good) answer came in time."""

        async def all_of() -> list[list[Any] | None]:
            futures = [self._send(self._get, k, [(rfc1902.ObjectName(o), rfc1902.Null()) for o in oids])
                       for k, oids in requests.items()]  # fmt: skip
            return list(await asyncio.gather(*futures))

        return dict(zip(requests, self.run(all_of()), strict=True))

    def set(self, writes: dict[int, list[tuple[OID, int]]]) -> None:
        """Send writes to the contexts without waiting for the answers: an unanswered or refused write counts
        in `set_failures` once its answer (or its timeout) comes in, while the manager runs a later request."""
        for k, pairs in writes.items():
            answer = self._send(self._set, k, [(rfc1902.ObjectName(o), rfc1902.Integer32(v)) for o, v in pairs])
            answer.add_done_callback(self._count_failure)

    def _count_failure(self, answer: asyncio.Future[list[Any] | None]) -> None:
        self.set_failures += answer.result() is None

    def close(self) -> None:
        timer = self.engine.transport_dispatcher.loopingcall  # held: pysnmp lets go of it while cancelling it
        self.engine.close_dispatcher()
        if timer is not None:
            self.run(asyncio.gather(timer, return_exceptions=True))
        self.loop.close()
