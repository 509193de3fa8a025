"""`citysignal serve`: the command-center service on one scenario, until Ctrl-C / SIGTERM.

Start-up does everything that can fail on user input first (settings, scenario, net, database,
controller, listening socket, SUMO start) and reports it as one line with exit code 2. `--port 0`
asks the OS for a free port; the line `citysignal: serving ... at http://HOST:PORT/` on stderr gives it.

Nothing secret is printed: no token (not even the default development ones), and the database URL
with its password masked. There is no access log (it would carry every client's requests), and a
WebSocket message is capped at the HTTP body limit.
"""

from __future__ import annotations

import gc
import signal
import socket
import sys
from typing import Annotated

import typer

from citysignal.control.guard import DEFAULT_MAX_RED_S
from citysignal.errors import UserError
from citysignal.options import (
    Begin,
    BusesPerHour,
    DetectorFaults,
    EmergencyPerHour,
    End,
    FaultKind,
    FaultSeed,
    Field,
    MaxRed,
    NoPriority,
)
from citysignal.scenarios.demand import time_option
from citysignal.twin.session import DEFAULT_SEED

DB_HELP = "Audit store SQLAlchemy URL; default $CITYSIGNAL_DB or sqlite:///out/service/audit.db."


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    scenario: Annotated[str, typer.Argument(help="Bundled scenario name or path to a .sumocfg file.")],
    controller: Annotated[str, typer.Option("--controller", "-c", help="Controller at start (city-wide).")],
    speed: Annotated[float, typer.Option(min=0.01, max=1000.0, help="Simulated seconds per wall-clock second.")] = 1.0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free port).")] = 8000,
    db: Annotated[str | None, typer.Option(help=DB_HELP)] = None,
    seed: Annotated[int, typer.Option(help="SUMO seed of the first episode (next ones: +1 each).")] = DEFAULT_SEED,
    begin: Begin = None,
    end: End = None,
    max_red: MaxRed = DEFAULT_MAX_RED_S,
    detector_faults: DetectorFaults = None,
    fault_kind: FaultKind = "mixed",
    fault_seed: FaultSeed = 0,
    emergency_per_hour: EmergencyPerHour = 0.0,
    buses_per_hour: BusesPerHour = 0.0,
    no_priority: NoPriority = False,
    field: Field = None,
) -> None:
    """Run the command center: the twin in real time (x SPEED), API, live dashboard, audit log."""
    import uvicorn

    from citysignal.scenarios.priority import PriorityDemand
    from citysignal.service.app import MAX_BODY_BYTES, create_app
    from citysignal.service.config import Settings, masked_url
    from citysignal.service.context import build_service
    from citysignal.twin.faults import FaultSpec

    faults = None if detector_faults is None else FaultSpec(detector_faults, fault_kind, fault_seed)
    settings = Settings.from_env(host=host, port=port, db_url=db).validate()
    sock = _listen(host, port)
    settings = settings.with_port(int(sock.getsockname()[1]))
    try:
        service = build_service(settings, scenario, controller, speed=speed, seed=seed,
                                begin=time_option(begin, "--begin"), end=time_option(end, "--end"),
                                max_red=max_red, faults=faults,
                                priority=PriorityDemand(emergency_per_hour, buses_per_hour, seed),
                                priority_on=not no_priority, field=field)  # fmt: skip
        app = create_app(service)
        service.start()
    except UserError as exc:  # some carry a driver's multi-line message: the CLI prints one line
        sock.close()
        raise UserError(" ".join(str(exc).split())) from None
    except BaseException:
        sock.close()
        raise
    # The parsed net and layout live as long as the process: move them out of the collector's sight, so
    # a full collection (about 50 ms with manhattan_28x7 loaded) does not stall the 1 Hz stream.
    gc.collect()
    gc.freeze()
    if settings.uses_default_tokens:
        print("citysignal: development mode: the default tokens (see README) are accepted, on loopback only",
              file=sys.stderr)  # fmt: skip
    if service.scenario.note:
        print(f"citysignal: note: {service.scenario.note}", file=sys.stderr)
    url = settings.allowed_origins()[0] if settings.origin else f"http://{host}:{settings.port}"
    print(f"citysignal: serving {service.scenario.name} with {controller} at x{speed:g} at {url}/ "
          f"(audit store: {masked_url(settings.db_url)})", file=sys.stderr, flush=True)  # fmt: skip
    # No per-message deflate: it would compress the same frame once per client every second.
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", ws_per_message_deflate=False,
                            ws_max_size=MAX_BODY_BYTES)  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn shuts down on SIGTERM, then raises it again under the handler found at start: with this one,
    # a SIGTERM ends the service cleanly with exit code 0 (what service managers expect of a stop).
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        server.run(sockets=[sock])
    finally:
        service.stop()
        sock.close()
