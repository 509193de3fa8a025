"""The audit store: every operator action, controller switch and guard refusal, and KPI series.

Persisted through SQLAlchemy (2.x ORM) to any database it speaks: SQLite by default, in WAL mode with
`synchronous=FULL` (every commit is on disk before it returns), PostgreSQL by URL
(`postgresql+psycopg://...`; the driver is not a dependency of citysignal: `pip install "psycopg[binary]"`).
Both are tested alike, PostgreSQL against a real server. Row ids are 64-bit on both.

Durability contract: `record()` commits before it returns, and the API acknowledges an operator
action only after `record()` returned, so an acknowledged action survives a kill -9 of the service.
System records (KPI samples, guard events from the control loop) go through `record_later()` /
`kpi_later()`: a writer thread commits them in batches, so the control loop never waits for the disk;
the last batch (at most a second) can be lost on a kill -9, and nothing in it was acknowledged to anyone.

What a row stores is bounded, whatever a client submits: short fields are cut to their column width,
`detail` (JSON) to `DETAIL_MAX_CHARS`; a longer detail is replaced by `{"truncated": true, "chars": N,
"head": "<its first characters>"}`. Text is made storable on every backend (PostgreSQL refuses NUL
characters, no driver encodes a lone surrogate), so an audited request cannot fail to be audited.

Limits: the schema is created on first use (`create_all`); there are no migrations yet. Timestamps are
UTC seconds since the epoch (float), the same on every backend.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Float, Integer, LargeBinary, String, Text, create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from citysignal.errors import UserError

WRITER_BATCH = 200
WRITER_FLUSH_S = 0.5
DETAIL_MAX_CHARS = 2048


# Row ids are 64-bit on every backend (the API takes any 64-bit id to page by); SQLite makes a column its
# rowid, with automatic ids, only when it is declared INTEGER.
ROW_ID = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class EventRow(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    sim_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    actor: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32), index=True)
    target: Mapped[str] = mapped_column(String(128))
    result: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text, default="{}")


class KpiRow(Base):
    __tablename__ = "kpi_samples"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    run_id: Mapped[str] = mapped_column(String(32), index=True)
    episode: Mapped[int] = mapped_column(Integer)
    sim_time: Mapped[float] = mapped_column(Float)
    controller: Mapped[str] = mapped_column(String(64))
    vehicles: Mapped[float] = mapped_column(Float)
    halting: Mapped[float] = mapped_column(Float)
    mean_speed: Mapped[float] = mapped_column(Float)
    occupancy: Mapped[float] = mapped_column(Float)
    preemptions: Mapped[int] = mapped_column(Integer)
    deferred: Mapped[int] = mapped_column(Integer)
    refused: Mapped[int] = mapped_column(Integer)
    violations: Mapped[int] = mapped_column(Integer)
    overrides: Mapped[int] = mapped_column(Integer)
    pace: Mapped[float] = mapped_column(Float)


KPI_FIELDS = (
    "vehicles", "halting", "mean_speed", "occupancy", "preemptions", "deferred", "refused", "violations",
    "overrides", "pace",
)  # fmt: skip


@dataclass(frozen=True)
class EventIn:
    """One audit record before it is stored."""

    actor: str
    role: str
    action: str
    target: str
    result: str
    detail: dict[str, Any]
    sim_time: float | None = None
    at: float | None = None


def storable(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, NUL and lone surrogates replaced (PostgreSQL refuses NUL, no driver
    encodes a lone surrogate)."""
    return text[:limit].replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")


def detail_json(detail: dict[str, Any]) -> str:
    """`detail` as JSON of at most DETAIL_MAX_CHARS characters (ASCII), marked when it had to be cut."""
    # through UTF-8 and back first: a lone surrogate (a JSON body can carry one) becomes "?", so what is read
    # back can always be sent; then ASCII, so that the cap in characters is also one in bytes
    raw = json.dumps(detail, default=str, ensure_ascii=False).encode("utf-8", "replace")
    text = json.dumps(json.loads(raw))
    if len(text) <= DETAIL_MAX_CHARS:
        return text
    marker: dict[str, Any] = {"truncated": True, "chars": len(text), "head": ""}
    room = DETAIL_MAX_CHARS - len(json.dumps(marker))
    # `text` is ASCII JSON without control characters: quoting it again doubles its quotes and backslashes only
    quoted = accumulate(2 if c in '"\\' else 1 for c in text[:room])
    return json.dumps({**marker, "head": text[: sum(1 for n in quoted if n <= room)]})


def event_dict(row: EventRow) -> dict[str, Any]:
    return {
        "id": row.id, "at": row.at, "run_id": row.run_id, "sim_time": row.sim_time, "actor": row.actor,
        "role": row.role, "action": row.action, "target": row.target, "result": row.result,
        "detail": json.loads(row.detail or "{}"),
    }  # fmt: skip


def kpi_dict(row: KpiRow) -> dict[str, Any]:
    out: dict[str, Any] = {"id": row.id, "at": row.at, "run_id": row.run_id, "episode": row.episode,
                           "sim_time": row.sim_time, "controller": row.controller}  # fmt: skip
    out.update({k: getattr(row, k) for k in KPI_FIELDS})
    return out


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def open_engine(url: str) -> Engine:
    """A SQLAlchemy engine for `url` with the schema in place; bad URL or database -> UserError."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise UserError(f"bad database URL '{url}': {exc}") from None
    sqlite = parsed.get_backend_name() == "sqlite"
    kwargs: dict[str, Any] = {}
    if sqlite:
        kwargs["connect_args"] = {"check_same_thread": False}
        if parsed.database and parsed.database != ":memory:":
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UserError(f"cannot create the folder of the audit database {parsed.database}: "
                                f"{exc.strerror}") from None  # fmt: skip
    try:
        engine = create_engine(parsed, pool_pre_ping=not sqlite, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        raise UserError(f"no database driver for '{parsed.drivername}' ({exc}); e.g. pip install psycopg") from None
    if sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    try:
        Base.metadata.create_all(engine)
    except SQLAlchemyError as exc:
        reason = str(exc.args[0]).splitlines()[0]  # drivers add hints on further lines; a user error is one line
        raise UserError(f"cannot open the audit database {parsed.render_as_string()}: {reason}") from None
    return engine


class AuditStore:
    """Audit log and KPI series of one service process (`run_id`), over the whole history."""

    def __init__(self, url: str, run_id: str) -> None:
        self.url = url
        self.run_id = run_id
        self.engine = open_engine(url)
        self._write_lock = threading.Lock()  # one writer at a time: SQLite would serialize anyway
        self._queue: queue.Queue[EventIn | dict[str, Any] | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._last_event_id = self._max_event_id()
        self.write_errors = 0

    @property
    def journal_mode(self) -> str | None:
        """SQLite's journal mode ("wal"), None on other backends."""
        if self.engine.dialect.name != "sqlite":
            return None
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())

    @property
    def last_event_id(self) -> int:
        return self._last_event_id

    def _max_event_id(self) -> int:
        with Session(self.engine) as session:
            return int(session.scalar(select(func.max(EventRow.id))) or 0)

    # writing ---------------------------------------------------------------------------------
    def _row(self, ev: EventIn) -> EventRow:
        return EventRow(
            at=ev.at if ev.at is not None else time.time(), run_id=self.run_id, sim_time=ev.sim_time,
            actor=storable(ev.actor, 64), role=storable(ev.role, 16), action=storable(ev.action, 32),
            target=storable(ev.target, 128), result=storable(ev.result, 64), detail=detail_json(ev.detail),
        )  # fmt: skip

    def record(self, ev: EventIn) -> dict[str, Any]:
        """Store one event and commit before returning it (with its id)."""
        with self._write_lock, Session(self.engine, expire_on_commit=False) as session:
            row = self._row(ev)
            session.add(row)
            session.commit()
            self._last_event_id = max(self._last_event_id, row.id)
            return event_dict(row)

    def record_later(self, ev: EventIn) -> None:
        """Queue a system event for the writer thread (the control loop must not wait for the disk)."""
        self._queue.put(ev)

    def kpi_later(self, sample: dict[str, Any]) -> None:
        self._queue.put(sample)

    def start_writer(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, name="citysignal-audit-writer", daemon=True)
            self._writer.start()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            items: list[EventIn | dict[str, Any]] = []
            try:
                first = self._queue.get(timeout=WRITER_FLUSH_S)
            except queue.Empty:
                continue
            if first is None:
                stop = True
            else:
                items.append(first)
            while len(items) < WRITER_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            if items:
                self._write_batch(items)

    def _write_batch(self, items: list[EventIn | dict[str, Any]]) -> None:
        try:
            with self._write_lock, Session(self.engine, expire_on_commit=False) as session:
                rows: list[EventRow] = []
                for item in items:
                    if isinstance(item, EventIn):
                        rows.append(self._row(item))
                        session.add(rows[-1])
                    else:
                        session.add(KpiRow(run_id=self.run_id, **item))
                session.commit()
                if rows:
                    self._last_event_id = max(self._last_event_id, *(r.id for r in rows))
        except SQLAlchemyError:
            self.write_errors += 1  # surfaced by /api/health; the loop goes on

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is committed (stops and restarts the writer)."""
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout)
            self._writer = None
        else:
            items: list[EventIn | dict[str, Any]] = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    items.append(item)
            if items:
                self._write_batch(items)

    def close(self) -> None:
        self.flush()
        self.engine.dispose()

    # reading ---------------------------------------------------------------------------------
    def events(
        self, limit: int = 100, before_id: int | None = None, after_id: int | None = None,
        action: str | None = None, target: str | None = None,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """Newest first, over every run. `action` and `target` match what `record` stored for them."""
        query = select(EventRow).order_by(EventRow.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(EventRow.id < before_id)
        if after_id is not None:
            query = query.where(EventRow.id > after_id)
        if action is not None:
            query = query.where(EventRow.action == storable(action, 32))
        if target is not None:
            query = query.where(EventRow.target == storable(target, 128))
        with Session(self.engine) as session:
            return [event_dict(r) for r in session.scalars(query)]

    def kpis(self, limit: int = 360, after_id: int | None = None) -> list[dict[str, Any]]:
        """The latest `limit` samples (over every run), oldest first."""
        query = select(KpiRow).order_by(KpiRow.id.desc()).limit(limit)
        if after_id is not None:
            query = query.where(KpiRow.id > after_id)
        with Session(self.engine) as session:
            rows = [kpi_dict(r) for r in session.scalars(query)]
        return rows[::-1]

    def unclean_previous_run(self) -> str | None:
        """The run id of the previous run if it has a start but no stop record (killed or crashed)."""
        with Session(self.engine) as session:
            last_start = session.scalars(
                select(EventRow).where(EventRow.action == "service_start", EventRow.run_id != self.run_id)
                .order_by(EventRow.id.desc()).limit(1)
            ).first()  # fmt: skip
            if last_start is None:
                return None
            stopped = session.scalar(
                select(func.count()).select_from(EventRow)
                .where(EventRow.run_id == last_start.run_id, EventRow.action == "service_stop")
            )  # fmt: skip
            return None if stopped else last_start.run_id


# Restart state ---------------------------------------------------------------------------------------
# What a restarted service continues from, one row of each per scenario key (`EngineConfig.key`): the
# operators' controller assignments and active overrides (written before an action is acknowledged), and
# the twin's latest snapshot (each replaces the last). A clean stop deletes both: the next run starts as
# its command line says.


class ControlStateRow(Base):
    __tablename__ = "control_state"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(Text)  # JSON


class SnapshotRow(Base):
    __tablename__ = "twin_snapshots"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    run_id: Mapped[str] = mapped_column(String(32))
    taken_at: Mapped[float] = mapped_column(Float)
    sim_time: Mapped[float] = mapped_column(Float)
    episode: Mapped[int] = mapped_column(Integer)
    episode_steps: Mapped[int] = mapped_column(Integer)
    guard: Mapped[str] = mapped_column(Text)  # JSON (with Infinity)
    sumo_state: Mapped[bytes] = mapped_column(LargeBinary)  # gzip-compressed SUMO state XML


SNAPSHOT_FIELDS = ("taken_at", "sim_time", "episode", "episode_steps")


class RestartStore:
    """The restart state of one service process (`run_id`) in the audit store's database."""

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine = engine
        self.run_id = run_id

    def save_control(self, key: str, state: dict[str, Any]) -> None:
        """Commit before returning: the API acknowledges an override or switch only after this."""
        with Session(self.engine) as session:
            session.merge(ControlStateRow(key=key, run_id=self.run_id, at=time.time(), state=json.dumps(state)))
            session.commit()

    def load_control(self, key: str) -> tuple[float, dict[str, Any]] | None:
        """(when it was last written, the state), or None."""
        with Session(self.engine) as session:
            row = session.get(ControlStateRow, key)
            return None if row is None else (row.at, json.loads(row.state))

    def save_snapshot(self, key: str, fields: dict[str, Any], guard: dict[str, Any], sumo_state: bytes) -> None:
        """`fields`: SNAPSHOT_FIELDS."""
        with Session(self.engine) as session:
            session.merge(SnapshotRow(key=key, run_id=self.run_id, guard=json.dumps(guard), sumo_state=sumo_state,
                                      **{f: fields[f] for f in SNAPSHOT_FIELDS}))  # fmt: skip
            session.commit()

    def load_snapshot(self, key: str) -> tuple[dict[str, Any], dict[str, Any], bytes] | None:
        """(SNAPSHOT_FIELDS, guard state, SUMO state), or None."""
        with Session(self.engine) as session:
            row = session.get(SnapshotRow, key)
            if row is None:
                return None
            return {f: getattr(row, f) for f in SNAPSHOT_FIELDS}, json.loads(row.guard), bytes(row.sumo_state)

    def clear(self, key: str) -> None:
        with Session(self.engine) as session:
            for table in (ControlStateRow, SnapshotRow):
                row = session.get(table, key)
                if row is not None:
                    session.delete(row)
            session.commit()
