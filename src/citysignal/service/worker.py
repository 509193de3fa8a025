"""The twin in a worker process, watched, restarted from its latest snapshot when it dies.

libsumo holds Python's GIL for a whole simulation step (measured on manhattan_28x7 near its peak:
30-70 ms per step), so a twin in a thread of the API process would stall every request and every
WebSocket send for that long. `EngineProcess` runs `ControlEngine` in a spawned child process and
offers the same calls: commands (override, controller switch, intersection detail) go over a pipe and
the child answers them; the child streams `Live` snapshots (at most every `LIVE_EVERY_S` of wall
time, and with every KPI sample; the last one held back follows within `BEAT_S`), its system events and
KPI samples (the parent writes them to the audit store: one writer per database), a heartbeat every
`BEAT_S`, and a `Snapshot` (SUMO state and guard state) every `SNAPSHOT_EVERY_S`.

Failure modes:
- frozen twin (paused, hung in SUMO, starved of CPU): no word from the child for `STALE_S`, or
  heartbeats but no simulation step for max(`STALE_S`, 3 steps): `health()` says "degraded" with the
  reason, and every call is refused at once with 503 instead of waiting, so a burst of requests cannot
  hold the API's threads. A call already sent waits at most `CALL_TIMEOUT_S` (+ grace), and one that goes
  unanswered makes the twin degraded at once, until it speaks again; the child drops calls that reach it
  after their deadline, so a refused override is never carried out later. After
  `hung_restart_s` of silence the twin is killed and restarted as below. Entering and leaving the
  degraded state is audited (`twin_degraded`, `twin_recovered`).
- twin died (kill -9, segfault in SUMO, the loop crashed): health says "restarting" (503), a new child
  starts from the latest snapshot with the current controller assignments and overrides, and
  `twin_restart` is audited with the downtime. The new child is a spare started beforehand that has
  loaded the net and waits for "go" (it holds a second copy of the net in memory), so a restart costs
  SUMO's start and the state load only: about 1 s on grid4x4 and manhattan_28x7. At most `MAX_RESTARTS`
  in `RESTART_WINDOW_S`; then the error stays (a twin that cannot run is not restarted forever).
- service killed: the child ends when the parent goes away (its pipe closes), so a kill -9 of the
  service leaves no orphan simulation; the restart state in the database (`store.RestartStore`) lets
  the next service continue (see `context`). The child ignores SIGINT: Ctrl-C in a terminal reaches
  the whole process group and the parent stops the child in order.

Limits: a command waits for the step in progress (one step, up to ~0.1 s on the largest bundled city);
`live()` in the parent is at most `LIVE_EVERY_S` old; a restart loses what happened since the snapshot
(at most `SNAPSHOT_EVERY_S` of wall time) and starts the controllers afresh from the greens shown. The
child is started with "spawn", so a script that builds a service itself must guard its entry point with
`if __name__ == "__main__":`.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import multiprocessing
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from sqlalchemy.exc import SQLAlchemyError

from citysignal.errors import UserError
from citysignal.network import Network, load_network
from citysignal.network.layout import Layout
from citysignal.service.engine import (
    CommandError,
    ControlEngine,
    ControlState,
    EngineConfig,
    Live,
    OverrideMode,
    Recorder,
    Snapshot,
)
from citysignal.service.store import EventIn, RestartStore

LIVE_EVERY_S = 0.1
BEAT_S = 0.2
STALE_S = 1.5
CALL_TIMEOUT_S = 1.0
CALL_GRACE_S = 0.25
START_TIMEOUT_S = 120.0
HUNG_RESTART_S = 30.0
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0
COMMANDS = {"set_override": True, "switch_controller": True, "detail": False}  # name: changes control state
Health = Literal["ok", "degraded", "restarting", "error"]
Reply = tuple[bool, Any, ControlState | None]


class _PipeRecorder:
    def __init__(self, send: Any) -> None:
        self._send = send

    def record_later(self, ev: EventIn) -> None:
        self._send(("event", ev))

    def kpi_later(self, sample: dict[str, Any]) -> None:
        self._send(("kpi", sample))


class _LiveStream:
    """The child's `Live` snapshots to the parent: at most one every `LIVE_EVERY_S`, and every one that
    carries a new KPI sample. One held back is sent by `flush` once it is due, so the parent's view catches
    up with the last step when the engine stops publishing (a field window's end, a stalled twin)."""

    def __init__(self, send: Any) -> None:
        self._send = send
        self._lock = threading.Lock()  # the engine thread publishes, the main thread flushes
        self._sent_at = 0.0
        self._sent_sample: object = None
        self._held: Live | None = None

    def publish(self, live: Live) -> None:
        with self._lock:
            if time.monotonic() - self._sent_at >= LIVE_EVERY_S or live.kpi_sample is not self._sent_sample:
                self._put(live)
            else:
                self._held = live

    def flush(self) -> None:
        with self._lock:
            if self._held is not None and time.monotonic() - self._sent_at >= LIVE_EVERY_S:
                self._put(self._held)

    def _put(self, live: Live) -> None:
        self._sent_at, self._sent_sample, self._held = time.monotonic(), live.kpi_sample, None
        self._send(("live", live))


def worker_main(conn: Connection, config: EngineConfig) -> None:
    """Entry point of the child process: load the net, wait for "go" (a spare waits until its twin is
    needed), then run the engine, stream snapshots, beat and answer commands."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock, contextlib.suppress(BrokenPipeError, OSError):  # parent gone: the receive loop ends us
            conn.send(message)

    stream = _LiveStream(send)
    try:
        sc = config.scenario
        network = load_network(sc.net_file, sc.additional_files)
        layout = Layout.from_network(network)
        gc.freeze()  # the net and layout stay for the process's life: keep them out of full collections
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] != "go":
            return
        _, control, resume = message
        engine = ControlEngine(config, network, layout, _PipeRecorder(send), stream.publish,
                               lambda snap: send(("snapshot", snap)), resume)  # fmt: skip
        engine.apply_control(control)
        engine.start()
    except UserError as exc:
        send(("failed", str(exc)))
        return
    except Exception as exc:
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send(("ready",))
    reported = False
    beat_at = 0.0
    try:
        while True:
            if engine.error is not None and not reported:
                send(("failed", engine.error))
                reported = True
            now = time.monotonic()
            if now - beat_at >= BEAT_S:
                beat_at = now
                send(("beat", engine.loading, now - engine.stepped_at))
            stream.flush()
            if not conn.poll(BEAT_S):
                continue
            message = conn.recv()
            if message[0] == "stop":
                break
            _, call_id, deadline, method, args = message
            if time.monotonic() > deadline:  # the caller was already answered 503: never act on it late
                send(("reply", call_id, False, (503, "the call arrived after its deadline"), None))
                continue
            try:
                if method not in COMMANDS:
                    raise CommandError(400, f"unknown command {method}")
                value = getattr(engine, method)(*args)
                send(("reply", call_id, True, value, engine.control_state() if COMMANDS[method] else None))
            except CommandError as exc:
                send(("reply", call_id, False, (exc.status, exc.message), None))
            except Exception as exc:
                send(("reply", call_id, False, (500, f"{type(exc).__name__}: {exc}"), None))
    except (EOFError, OSError):
        pass
    finally:
        engine.stop()
        send(("stopped",))


@dataclass
class _Child:
    """One twin process and what the parent knows of it."""

    process: BaseProcess
    conn: Connection
    heard: float = field(default_factory=time.monotonic)  # last message of any kind
    unanswered: float = 0.0  # when a call last went unanswered
    ready: threading.Event = field(default_factory=threading.Event)
    accepted: bool = False  # started and taken into service: its loss triggers a restart
    ended: bool = False  # its reader has finished
    loading: bool = True
    since_step: float = 0.0  # as of the last heartbeat
    beat_heard: float = field(default_factory=time.monotonic)  # when the last heartbeat came
    failed: str | None = None
    calls: dict[int, Future[Reply]] = field(default_factory=dict)
    reader: threading.Thread | None = None

    def silent(self) -> float:
        return time.monotonic() - self.heard

    def stalled(self) -> float:
        """Seconds since the twin last stepped, as far as the parent can tell: counted from the last
        heartbeat, not from the last message, since a thawed twin answers the calls queued while it was
        frozen before it steps again (those answers must not make it look as if it had just stepped)."""
        return self.since_step + time.monotonic() - self.beat_heard


class EngineProcess:
    """`ControlEngine`'s interface, with the engine running in a watched, restartable child process."""

    def __init__(
        self, config: EngineConfig, network: Network, layout: Layout, recorder: Recorder,
        restart_store: RestartStore | None = None, *, hung_restart_s: float = HUNG_RESTART_S,
    ) -> None:  # fmt: skip
        # A local engine that never starts: validates the configuration here, in one line, answers the
        # static questions (controllers offered, intersection ids) and checks restored control state.
        self.local = ControlEngine(config, network, layout, recorder)
        self.config = config
        self.layout = layout
        self.offered = self.local.offered
        self.recorder = recorder
        self.restart_store = restart_store
        self.hung_restart_s = hung_restart_s
        self.restarts = 0
        self.snapshot_errors = 0
        self._fatal: str | None = None
        self._restarting: str | None = None
        self._control = self.local.control_state()
        self._snapshot: Snapshot | None = None
        self._live: Live | None = None
        self._child: _Child | None = None
        self._spare: _Child | None = None  # a process with the net loaded, waiting to replace the twin
        self._lock = threading.Lock()  # the child swap against stop()
        self._stopping = False
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsaved: Snapshot | None = None
        self._recent_restarts: deque[float] = deque()
        self._ids = itertools.count()
        self._send_lock = threading.Lock()

    # lifecycle -----------------------------------------------------------------------------
    def start(self, timeout: float = START_TIMEOUT_S, *, control: ControlState | None = None,
              resume: Snapshot | None = None) -> None:  # fmt: skip
        """Start the twin (from `resume` and with `control` when a restarted service carries them over)."""
        if self._child is not None:
            return
        if control is not None:
            self._control = control
        self._snapshot = resume
        self._persist_control()
        failure = self._first_start(timeout)
        if failure is not None and resume is not None:
            self._unusable(resume, failure)
            failure = self._first_start(timeout)
        if failure is not None:
            self.stop()
            raise UserError(failure)
        self._prepare_spare()
        for target in (self._watch, self._save_snapshots):
            thread = threading.Thread(target=target, name=f"citysignal-twin-{target.__name__[1:]}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _first_start(self, timeout: float) -> str | None:
        """Start the twin; why it did not start, or None."""
        with self._lock:
            child = self._go(self._spawn())
        started = child.ready.wait(timeout)
        if started and self._accept(child):
            return None
        self._end(child, 1.0)
        if child.failed is not None:
            return child.failed
        return f"the twin ended during its start (exit code {child.process.exitcode})" if started else (
            f"the twin did not start within {timeout:g} s")  # fmt: skip

    def _unusable(self, snap: Snapshot, failure: str) -> None:
        """A snapshot the twin did not start from (SUMO may even crash on it) must not keep the twin down:
        the next start is from the scenario's begin."""
        if self._snapshot is snap:
            self._snapshot = None
        self._system("snapshot_unusable", "error", {"error": failure, "sim_time": snap.sim_time})

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            self._stopping = True
            child, spare = self._child, self._spare
        self._wake.set()
        for process in (child, spare):
            if process is not None:
                self._end(process, timeout)
        for thread in self._threads:
            thread.join(timeout)

    def _end(self, child: _Child, timeout: float) -> None:
        """Ask the child to stop, then terminate, then kill (a paused process takes only SIGKILL). A child
        that has said nothing for a while (paused, hung, or a spare that never beats) is not waited for."""
        process = child.process
        if process.is_alive():
            if self._send_lock.acquire(timeout=1.0):
                try:
                    with contextlib.suppress(BrokenPipeError, OSError):
                        child.conn.send(("stop",))
                finally:
                    self._send_lock.release()
            deadline = time.monotonic() + timeout
            while process.is_alive() and time.monotonic() < deadline and child.silent() < STALE_S + 1.0:
                process.join(0.1)
            if process.is_alive():
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
                process.join(5)
        if child.reader is not None and child.reader is not threading.current_thread():
            child.reader.join(5)
        child.conn.close()

    def _accept(self, child: _Child) -> bool:
        """Take a started child into service, unless it failed or already ended (then no reader restarts it)."""
        with self._lock:
            child.accepted = child.failed is None and not child.ended and not self._stopping
            return child.accepted

    def _spawn(self) -> _Child:
        """A new process that loads the net and waits for `_go`."""
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server
        parent, child_end = ctx.Pipe()
        process = ctx.Process(target=worker_main, args=(child_end, self.config), name="citysignal-twin", daemon=True)
        process.start()
        child_end.close()
        child = _Child(process, parent)
        child.reader = threading.Thread(target=self._read, args=(child,), name="citysignal-twin-reader", daemon=True)
        child.reader.start()
        return child

    def _go(self, child: _Child) -> _Child:
        """Make `child` the twin: start it from the latest snapshot and control state (with `_lock` held)."""
        self._child = child
        with self._send_lock, contextlib.suppress(BrokenPipeError, OSError):  # a dead child: its reader tells
            child.conn.send(("go", self._control, self._snapshot))
        child.heard = time.monotonic()
        return child

    def _prepare_spare(self) -> None:
        """Load the net in a spare process now, so that a restart costs only SUMO's start and the state load."""
        with self._lock:
            if not self._stopping and self._spare is None:
                self._spare = self._spawn()

    def _take_spare(self) -> _Child | None:
        """The spare if it is still fit to start (with `_lock` held)."""
        spare, self._spare = self._spare, None
        if spare is not None and spare.process.is_alive() and spare.failed is None and not spare.ended:
            return spare
        return None

    # health ----------------------------------------------------------------------------------
    def health(self) -> tuple[Health, str | None]:
        """The twin's state, "ok" or what is wrong in words: "degraded" (frozen), "restarting", "error" (given up)."""
        if self._fatal is not None:
            return "error", self._fatal
        if self._restarting is not None:
            return "restarting", f"{self._restarting}; restarting the twin from its latest snapshot"
        child = self._child
        if child is None or not child.accepted:
            return "error", "the twin is not running"
        if not child.process.is_alive():  # before its reader has seen the pipe close
            return "restarting", "the twin process ended unexpectedly; restarting the twin from its latest snapshot"
        live = self._live
        at = f" at t = {live.time:g} s" if live is not None else ""
        silent = child.silent()
        if silent > STALE_S or child.unanswered > child.heard:
            return "degraded", f"the twin has not answered for {silent:.1f} s: simulated time stands still{at}"
        stalled = child.stalled()
        if not child.loading and stalled > max(STALE_S, 3.0 / self.config.speed):
            return "degraded", f"simulated time has stood still{at} for {stalled:.1f} s (the twin answers, no step)"
        return "ok", None

    @property
    def running(self) -> bool:
        return self.health()[0] == "ok"

    @property
    def error(self) -> str | None:
        return self.health()[1]

    @property
    def pid(self) -> int | None:
        """The twin process's id (it changes with each restart)."""
        child = self._child
        return child.process.pid if child is not None else None

    def live(self) -> Live | None:
        return self._live

    def _watch(self) -> None:
        """Audit entering and leaving the degraded state; kill a twin silent for `hung_restart_s`."""
        state: Health = "ok"
        while not self._wake.wait(BEAT_S):
            status, reason = self.health()
            if status == "degraded" and state == "ok":
                self._system("twin_degraded", "degraded", {"reason": reason})
            elif status == "ok" and state == "degraded":
                self._system("twin_recovered", "ok", {})
            state = status if status in ("ok", "degraded") else state
            child = self._child
            if status == "degraded" and child is not None and child.silent() > self.hung_restart_s:
                child.failed = f"the twin did not answer for {child.silent():.0f} s and was killed"
                child.process.kill()
                state = "ok"  # the restart is audited on its own

    # the child's messages ------------------------------------------------------------------
    def _read(self, child: _Child) -> None:
        try:
            while True:
                message = child.conn.recv()
                child.heard = time.monotonic()
                kind = message[0]
                if kind == "live":
                    self._live = message[1]
                elif kind == "beat":
                    child.loading, child.since_step, child.beat_heard = message[1], message[2], child.heard
                elif kind == "event":
                    self.recorder.record_later(message[1])
                elif kind == "kpi":
                    self.recorder.kpi_later(message[1])
                elif kind == "snapshot":
                    self._snapshot = self._unsaved = message[1]
                elif kind == "reply":
                    future = child.calls.pop(message[1], None)
                    if future is not None:
                        future.set_result((message[2], message[3], message[4]))
                elif kind == "ready":
                    child.ready.set()
                elif kind == "failed":
                    child.failed = message[1]
                    if child.ready.is_set():  # the loop died in a running twin: end it, the restart follows
                        with self._send_lock, contextlib.suppress(BrokenPipeError, OSError):
                            child.conn.send(("stop",))
                    child.ready.set()
                elif kind == "stopped":
                    break
        except (EOFError, OSError):
            pass
        finally:
            child.ready.set()
            for future in list(child.calls.values()):
                future.set_result((False, (503, child.failed or "the twin stopped"), None))
            child.calls.clear()
            with self._lock:
                child.ended = True
                lost = child.accepted and not self._stopping
            if lost:
                self._lost(child)

    def _lost(self, child: _Child) -> None:
        detected = time.monotonic()
        child.process.join(2)
        reason = child.failed or f"the twin process ended unexpectedly (exit code {child.process.exitcode})"
        self._restarting = reason
        self._system("engine_error", "error", {"error": reason})
        thread = threading.Thread(target=self._restart, args=(reason, detected), name="citysignal-twin-restart",
                                  daemon=True)  # fmt: skip
        thread.start()

    def _restart(self, reason: str, detected: float) -> None:
        while True:
            now = time.monotonic()
            while self._recent_restarts and now - self._recent_restarts[0] > RESTART_WINDOW_S:
                self._recent_restarts.popleft()
            if len(self._recent_restarts) >= MAX_RESTARTS:
                self._fatal = f"{reason}; not restarted again: {MAX_RESTARTS} restarts in {RESTART_WINDOW_S:g} s"
                self._restarting = None
                self._system("twin_restart", "gave_up", {"reason": reason, "restarts": self.restarts})
                return
            self._recent_restarts.append(now)
            with self._lock:
                if self._stopping:
                    return
                old = self._child
                snap = self._snapshot
                child = self._go(self._take_spare() or self._spawn())
            if old is not None:
                self._end(old, 1.0)
            if child.ready.wait(START_TIMEOUT_S) and self._accept(child):
                self.restarts += 1
                self._restarting = None
                self._system("twin_restart", "ok", {
                    "reason": reason, "downtime_s": round(time.monotonic() - detected, 3), "restarts": self.restarts,
                    "from_sim_time": snap.sim_time if snap else None,
                    "snapshot_taken_at": snap.taken_at if snap else None,
                })  # fmt: skip
                self._prepare_spare()
                return
            if self._stopping:
                return
            reason = child.failed or f"the restarted twin ended (exit code {child.process.exitcode})"
            self._restarting = reason
            if snap is not None:
                self._unusable(snap, reason)

    def _save_snapshots(self) -> None:
        """Write the newest snapshot to the database now and then; a slow disk only skips older ones."""
        while not self._wake.wait(1.0):
            snap, self._unsaved = self._unsaved, None
            if snap is None or self.restart_store is None:
                continue
            fields = {"taken_at": snap.taken_at, "sim_time": snap.sim_time, "episode": snap.episode,
                      "episode_steps": snap.episode_steps}  # fmt: skip
            try:
                self.restart_store.save_snapshot(snap.key, fields, snap.guard, snap.sumo_state)
            except SQLAlchemyError:
                self.snapshot_errors += 1

    def _persist_control(self) -> None:
        if self.restart_store is not None:
            control = self._control
            self.restart_store.save_control(self.config.key, {"assignment": control.assignment,
                                                              "overrides": control.overrides})  # fmt: skip

    def _system(self, action: str, result: str, detail: dict[str, Any]) -> None:
        live = self._live
        self.recorder.record_later(EventIn("system", "system", action, "city", result, detail,
                                           sim_time=live.time if live else None))  # fmt: skip

    # commands ------------------------------------------------------------------------------
    def _call(self, method: str, *args: Any) -> Any:
        status, reason = self.health()
        child = self._child
        if status != "ok" or child is None:
            raise CommandError(503, reason or "the twin is not running")
        call_id = next(self._ids)
        future: Future[Reply] = Future()
        child.calls[call_id] = future
        try:
            if not self._send_lock.acquire(timeout=CALL_TIMEOUT_S):
                raise CommandError(503, f"the twin did not take the call within {CALL_TIMEOUT_S:g} s")
            try:
                child.conn.send(("call", call_id, time.monotonic() + CALL_TIMEOUT_S, method, args))
            finally:
                self._send_lock.release()
            ok, value, control = future.result(CALL_TIMEOUT_S + CALL_GRACE_S)
        except FutureTimeout:
            child.unanswered = time.monotonic()  # the next callers are refused at once, until it speaks again
            raise CommandError(503, f"the twin did not answer within {CALL_TIMEOUT_S:g} s") from None
        except (BrokenPipeError, OSError):
            raise CommandError(503, self.error or "the twin is not running") from None
        finally:
            child.calls.pop(call_id, None)
        if control is not None:  # persisted before the API acknowledges the action
            self._control = control
            self._persist_control()
        if not ok:
            status_code, text = value
            raise CommandError(int(status_code), str(text))
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

    def latest_snapshot(self) -> Snapshot | None:
        """The twin's latest snapshot (at most `SNAPSHOT_EVERY_S` of wall time old while it runs): what-if
        races fork the live city from it."""
        return self._snapshot
