"""The twin in a worker process, so the API process never waits for SUMO.

libsumo holds Python's GIL for a whole simulation step (measured on manhattan_28x7 near its peak:
30-70 ms per step), so a twin in a thread of the API process would stall every request and every
WebSocket send for that long. `EngineProcess` runs `ControlEngine` in a spawned child process and
offers the same calls: commands (override, controller switch, intersection detail) go over a pipe and
the child answers them; the child streams `Live` snapshots (at most every `LIVE_EVERY_S` of wall
time, and with every KPI sample) and its system events and KPI samples, which the parent writes to
the audit store (one writer per database).

Failure modes: a crash of the twin, even a segfault in SUMO, ends only the child; the API keeps
serving the history and reports the error on /api/health. The child ends when the parent goes away
(its pipe closes), so a kill -9 of the service leaves no orphan simulation. The child ignores SIGINT:
Ctrl-C in a terminal reaches the whole process group and the parent stops the child in order.

Limits: a command waits for the step in progress (one step, up to ~0.1 s on the largest bundled city);
`live()` in the parent is at most `LIVE_EVERY_S` old. The child is started with "spawn", so a script
that builds a service itself must guard its entry point with `if __name__ == "__main__":`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import signal
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection
from typing import Any

from citysignal.errors import UserError
from citysignal.network import Network, load_network
from citysignal.network.layout import Layout
from citysignal.service.engine import CommandError, ControlEngine, EngineConfig, Live, OverrideMode, Recorder
from citysignal.service.store import EventIn

LIVE_EVERY_S = 0.1
CALL_TIMEOUT_S = 30.0
COMMANDS = frozenset({"set_override", "switch_controller", "detail"})


class _PipeRecorder:
    def __init__(self, send: Any) -> None:
        self._send = send

    def record_later(self, ev: EventIn) -> None:
        self._send(("event", ev))

    def kpi_later(self, sample: dict[str, Any]) -> None:
        self._send(("kpi", sample))


def worker_main(conn: Connection, config: EngineConfig) -> None:
    """Entry point of the child process: run the engine, stream snapshots, answer commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock, contextlib.suppress(BrokenPipeError, OSError):  # parent gone: the receive loop ends us
            conn.send(message)

    sent_at = 0.0
    sent_sample: object = None

    def publish(live: Live) -> None:
        nonlocal sent_at, sent_sample
        now = time.monotonic()
        if now - sent_at >= LIVE_EVERY_S or live.kpi_sample is not sent_sample:
            sent_at, sent_sample = now, live.kpi_sample
            send(("live", live))

    try:
        sc = config.scenario
        network = load_network(sc.net_file, sc.additional_files)
        engine = ControlEngine(config, network, Layout.from_network(network), _PipeRecorder(send), publish)
        engine.start()
        gc.freeze()  # the net and layout stay for the process's life: keep them out of full collections
    except UserError as exc:
        send(("failed", str(exc)))
        return
    except Exception as exc:
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready",))
    reported = False
    try:
        while True:
            if engine.error is not None and not reported:
                send(("failed", engine.error))
                reported = True
            if not conn.poll(0.5):
                continue
            message = conn.recv()
            if message[0] == "stop":
                break
            _, call_id, method, args = message
            try:
                if method not in COMMANDS:
                    raise CommandError(400, f"unknown command {method}")
                send(("reply", call_id, True, getattr(engine, method)(*args)))
            except CommandError as exc:
                send(("reply", call_id, False, (exc.status, exc.message)))
            except Exception as exc:
                send(("reply", call_id, False, (500, f"{type(exc).__name__}: {exc}")))
    except (EOFError, OSError):
        pass
    finally:
        engine.stop()
        send(("stopped",))


class EngineProcess:
    """`ControlEngine`'s interface, with the engine running in a child process."""

    def __init__(self, config: EngineConfig, network: Network, layout: Layout, recorder: Recorder) -> None:
        # A local engine that never starts: validates the configuration here, in one line, and answers
        # the static questions (controllers offered, intersection ids) without a round trip.
        self.local = ControlEngine(config, network, layout, recorder)
        self.config = config
        self.layout = layout
        self.offered = self.local.offered
        self.recorder = recorder
        self.error: str | None = None
        self._live: Live | None = None
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping = False
        self._calls: dict[int, Future[tuple[bool, Any]]] = {}
        self._ids = itertools.count()
        self._send_lock = threading.Lock()

    # lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        if self._process is not None:
            return
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server
        parent, child = ctx.Pipe()
        self._process = ctx.Process(target=worker_main, args=(child, self.config), name="citysignal-twin",
                                    daemon=True)  # fmt: skip
        self._process.start()
        child.close()
        self._conn = parent
        self._reader = threading.Thread(target=self._read, name="citysignal-twin-reader", daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise UserError(f"the twin did not start within {timeout:g} s")
        if self.error is not None:
            error = self.error
            self.stop()
            raise UserError(error)

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping = True
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        if process.is_alive():
            with self._send_lock, contextlib.suppress(BrokenPipeError, OSError):
                conn.send(("stop",))
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(5)
        if self._reader is not None:
            self._reader.join(5)
        conn.close()

    @property
    def running(self) -> bool:
        return (
            self._process is not None and self._process.is_alive() and self._ready.is_set() and self.error is None
        )

    def live(self) -> Live | None:
        return self._live

    def _read(self) -> None:
        assert self._conn is not None
        try:
            while True:
                message = self._conn.recv()
                kind = message[0]
                if kind == "live":
                    self._live = message[1]
                elif kind == "event":
                    self.recorder.record_later(message[1])
                elif kind == "kpi":
                    self.recorder.kpi_later(message[1])
                elif kind == "reply":
                    future = self._calls.pop(message[1], None)
                    if future is not None:
                        future.set_result((message[2], message[3]))
                elif kind == "ready":
                    self._ready.set()
                elif kind == "failed":
                    self.error = message[1]
                    self._ready.set()
                elif kind == "stopped":
                    break
        except (EOFError, OSError):
            if not self._stopping and self.error is None:
                assert self._process is not None
                self._process.join(2)
                self.error = f"the twin process ended unexpectedly (exit code {self._process.exitcode})"
                self.recorder.record_later(
                    EventIn("system", "system", "engine_error", "city", "error", {"error": self.error})
                )
        finally:
            self._ready.set()
            for future in list(self._calls.values()):
                future.set_result((False, (503, self.error or "the twin stopped")))
            self._calls.clear()

    # commands ------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        if not self.running or self._conn is None:
            raise CommandError(503, self.error or "the twin is not running")
        call_id = next(self._ids)
        future: Future[tuple[bool, Any]] = Future()
        self._calls[call_id] = future
        try:
            with self._send_lock:
                self._conn.send(("call", call_id, method, args))
            ok, value = future.result(CALL_TIMEOUT_S)
        except FutureTimeout:
            raise CommandError(504, f"the twin did not answer within {CALL_TIMEOUT_S:g} s") from None
        except (BrokenPipeError, OSError):
            raise CommandError(503, self.error or "the twin is not running") from None
        finally:
            self._calls.pop(call_id, None)
        if not ok:
            status, text = value
            raise CommandError(int(status), str(text))
        return value

    def intersection_index(self, inter_id: str) -> int:
        return self.local.intersection_index(inter_id)

    def set_override(self, inter_id: str, mode: OverrideMode, green: int | None, actor: str,
                     reason: str = "") -> dict[str, Any]:  # fmt: skip
        self.intersection_index(inter_id)
        result: dict[str, Any] = self._call("set_override", inter_id, mode, green, actor, reason)
        return result

    def switch_controller(self, name: str, inter_ids: list[str] | None, actor: str) -> dict[str, Any]:
        if name not in self.offered:
            raise CommandError(422, f"controller '{name}' cannot be served; choose from: {', '.join(self.offered)}")
        for inter_id in inter_ids or ():
            self.intersection_index(inter_id)
        result: dict[str, Any] = self._call("switch_controller", name, inter_ids, actor)
        return result

    def detail(self, inter_id: str) -> dict[str, Any]:
        self.intersection_index(inter_id)
        result: dict[str, Any] = self._call("detail", inter_id)
        return result
