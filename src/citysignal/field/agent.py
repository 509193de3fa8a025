"""An SNMP agent (pysnmp, asyncio) with one context per intersection, and a lossy link in front of it.

`Objects` is one context's objects: a table of OID -> value that its owner refreshes once per step, and
a few writable OIDs whose writes go to a callback (the phase control groups, the backup time). Only
what the table holds exists; a GET of anything else answers noSuchInstance. Access is by community
(v1/v2c, `COMMUNITY@k` for intersection `k`) or by one SNMPv3 user (authPriv: SHA-256 and AES-128),
with read-write access to every context; views (VACM) are not configured.

`LossyLink` is a UDP relay on the public port that drops each datagram with a probability, delays each
by a latency, and drops everything during outages: the impaired radio or fibre between the centre and
the cabinet, so that the agent and its clients stay unchanged. It assumes datagrams, not connections;
reordering happens only through equal delays (none).
"""

from __future__ import annotations

import asyncio
import bisect
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

from pysnmp.carrier.asyncio.dgram import udp
from pysnmp.entity import config, engine
from pysnmp.entity.rfc3413 import cmdrsp, context
from pysnmp.proto import rfc1902, rfc1905
from pysnmp.smi import error as smi_error
from pysnmp.smi.instrum import AbstractMibInstrumController

from citysignal.field.ntcip import OID

Value: TypeAlias = Any  # a pysnmp rfc1902 value (Integer32, Counter32, OctetString)
Writer = Callable[[OID, int], bool]  # accepts a write (True) or refuses its value (False)


@dataclass(frozen=True)
class V3User:
    """One SNMPv3 user, authPriv: HMAC-SHA-256 authentication, AES-128 privacy (keys: passphrases, >= 8 chars)."""

    name: str
    auth_key: str = field(repr=False)
    priv_key: str = field(repr=False)


class Objects(AbstractMibInstrumController):  # type: ignore[misc]
    """One context's objects (see the module docstring)."""

    def __init__(self, writable: frozenset[OID], on_write: Writer, on_access: Callable[[], None]) -> None:
        self.values: dict[OID, Value] = {}
        self.writable = writable
        self.on_write = on_write
        self.on_access = on_access  # told of every request
        self._order: list[OID] = []

    def update(self, values: dict[OID, Value]) -> None:
        if values.keys() != self.values.keys():
            self._order = sorted(values)
        self.values = values

    def read_variables(self, *var_binds: tuple[Any, Any], **ctx: Any) -> list[tuple[Any, Any]]:
        self.on_access()
        return [(name, self.values.get(tuple(name), rfc1905.noSuchInstance)) for name, _ in var_binds]

    def read_next_variables(self, *var_binds: tuple[Any, Any], **ctx: Any) -> list[tuple[Any, Any]]:
        self.on_access()
        out = []
        for name, _ in var_binds:
            i = bisect.bisect_right(self._order, tuple(name))
            if i < len(self._order):
                oid = self._order[i]
                out.append((rfc1902.ObjectName(oid), self.values[oid]))
            else:
                out.append((name, rfc1905.endOfMibView))
        return out

    def write_variables(self, *var_binds: tuple[Any, Any], **ctx: Any) -> list[tuple[Any, Any]]:
        self.on_access()
        for idx, (name, value) in enumerate(var_binds):  # all or nothing: check every one first
            if tuple(name) not in self.writable:
                raise smi_error.NotWritableError(name=name, idx=idx)
            if not isinstance(value, rfc1902.Integer32 | rfc1902.Integer):
                raise smi_error.WrongTypeError(name=name, idx=idx)
        for idx, (name, value) in enumerate(var_binds):
            if not self.on_write(tuple(name), int(value)):
                raise smi_error.WrongValueError(name=name, idx=idx)
        return list(var_binds)


def start_agent(sock: socket.socket, contexts: list[Objects], community: str, user: V3User | None) -> engine.SnmpEngine:
    """Serve `contexts` (context name `str(k)`) on a bound UDP socket; call from a running asyncio loop."""
    snmp = engine.SnmpEngine()
    config.add_transport(snmp, udp.DOMAIN_NAME, udp.UdpAsyncioTransport().open_server_mode(sock=sock))
    registry = context.SnmpContext(snmp)
    for k, objects in enumerate(contexts):
        name = str(k)
        registry.register_context_name(name, objects)
        config.add_v1_system(snmp, f"area-{k}", f"{community}@{k}", contextName=name)
    if user is not None:
        config.add_v3_user(snmp, user.name, config.USM_AUTH_HMAC192_SHA256, user.auth_key,
                           config.USM_PRIV_CFB128_AES, user.priv_key)  # fmt: skip
    for responder in (cmdrsp.GetCommandResponder, cmdrsp.SetCommandResponder, cmdrsp.NextCommandResponder,
                      cmdrsp.BulkCommandResponder):  # fmt: skip
        responder(snmp, registry)
    return snmp


class _Relay(asyncio.DatagramProtocol):
    """One client's way to the agent: what the agent answers goes back to that client over the link."""

    def __init__(self, link: LossyLink, client: tuple[str, int]) -> None:
        self.link = link
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.waiting: list[bytes] = []  # datagrams that arrived before the socket to the agent was open

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.waiting:
            self.transport.sendto(data)
        self.waiting.clear()

    def send(self, data: bytes) -> None:
        if self.transport is None:
            self.waiting.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.link.carry(lambda: self.link.answer(data, self.client))


class LossyLink(asyncio.DatagramProtocol):
    """The relay on the public port (see the module docstring); `down()` says whether an outage runs now."""

    def __init__(self, agent: tuple[str, int], loss: float, latency_s: float, down: Callable[[], bool],
                 seed: int = 0) -> None:  # fmt: skip
        self.agent = agent
        self.loss = loss
        self.latency_s = latency_s
        self.down = down
        self.rng = random.Random(seed)
        self.transport: asyncio.DatagramTransport | None = None
        self.relays: dict[tuple[str, int], _Relay] = {}
        self._opening: set[asyncio.Future[Any]] = set()
        self.dropped = 0
        self.carried = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def carry(self, send: Callable[[], None]) -> None:
        """Send a datagram over the link: dropped (outage, loss) or sent after the latency."""
        if self.down() or self.rng.random() < self.loss:
            self.dropped += 1
            return
        self.carried += 1
        if self.latency_s > 0:
            asyncio.get_running_loop().call_later(self.latency_s, send)
        else:
            send()

    def answer(self, data: bytes, client: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(data, client)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        relay = self.relays.get(addr)
        if relay is None:
            relay = self.relays[addr] = _Relay(self, addr)
            endpoint = asyncio.get_running_loop().create_datagram_endpoint(lambda: relay, remote_addr=self.agent)
            task = asyncio.ensure_future(endpoint)
            self._opening.add(task)  # held: a task nobody references may be collected before it runs
            task.add_done_callback(self._opening.discard)
        self.carry(lambda: relay.send(data))

    def close(self) -> None:
        for relay in self.relays.values():
            if relay.transport is not None:
                relay.transport.close()
        if self.transport is not None:
            self.transport.close()
