"""Ray start-up for every parallel run (bench, demo, training, what-if): local on loopback, or a cluster by address.

Local: on Linux, Ray binds a local instance to the machine's outward-facing address (even a plain
`ray.init()`, even with a loopback node address), and an exposed Ray runs code for whoever reaches it.
Ray keeps a single node on loopback only where it believes multi-node clusters are off, which
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` declares (checked with Ray 2.5x/2.60). Ray reads that variable
when it is imported and its processes inherit it, so it is set before the import, and Ray's constant is
set too in case something imported Ray earlier.

Cluster: an address (`host:6379`, `ray://host:10001` or `auto`) joins a running cluster with Ray's
token authentication (`RAY_AUTH_MODE=token` unless the environment says otherwise; the token comes
from `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or `~/.ray/auth_token`, as Ray looks for it). An
address that does not answer within `CONNECT_TIMEOUT_S`, or a cluster that refuses us, is a user
error (one line), not a traceback after Ray's minutes of retries.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import socket
import sys
import tempfile
from collections.abc import Iterator
from typing import IO
from urllib.parse import urlsplit

from citysignal.errors import UserError

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
CONNECT_TIMEOUT_S = 5.0
_DEFAULT_PORTS = {"ray": 10001, "": 6379}  # Ray Client, GCS


def init_ray(workers: int, address: str | None = None) -> None:
    """Start Ray locally with `workers` CPUs on loopback, or connect to the cluster at `address`.

    Does nothing when Ray already runs in this process. A cluster at a loopback address runs on
    this machine's loopback, so this process joins it in loopback mode too (Ray would otherwise look
    for its node under the machine's outward-facing address and wait for it)."""
    endpoint = None if address is None else _endpoint(address)
    if address is not None and endpoint is not None:
        _check_reachable(address, endpoint)
    on_loopback = address is None or (endpoint is not None and _is_loopback(endpoint[0]))
    if on_loopback:
        os.environ[LOOPBACK_ENV] = "0"
    if address is not None:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    import ray

    if ray.is_initialized():
        return
    if on_loopback:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False
    if address is None:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        return
    with tempfile.TemporaryFile("w+") as log:
        try:
            with _stderr_to(log):  # Ray's C++ client logs each retry there; a failure must end in one line
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            raise UserError(f"cannot connect to the Ray cluster at {address}: {_reason(exc)}") from exc
        log.seek(0)
        sys.stderr.write(log.read())


@contextlib.contextmanager
def _stderr_to(file: IO[str]) -> Iterator[None]:
    """Point file descriptor 2 (where native code writes) at `file` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a cluster address; None for `auto` / `local`, which Ray resolves on this machine."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        host = port = None
    if not host or port is None:
        raise UserError(f"bad Ray address '{address}': use host:port, ray://host:port or auto")
    return host, port


def _check_reachable(address: str, endpoint: tuple[str, int]) -> None:
    try:
        socket.create_connection(endpoint, timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from exc


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _reason(exc: BaseException) -> str:
    """The first sentence of the innermost error Ray reports (it wraps the cause, e.g. a refused token,
    in a generic error, sometimes as the text of a traceback)."""
    text = str(exc.__cause__ or exc).strip()
    errors = [ln.split(": ", 1)[1] for ln in text.splitlines() if re.match(r"^[\w.]*(Error|Exception): ", ln)]
    first = errors[-1] if errors else (text.splitlines()[0] if text else type(exc).__name__)
    reason = first.split(". ")[0]
    if "InvalidAuthToken" in text or "Authentication token" in text:
        reason += " (the cluster's token goes in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)"
    return reason
