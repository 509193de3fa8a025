"""Service settings: read once from the environment and the command line, validated at start-up.

Environment variables (all optional in development):

- `CITYSIGNAL_ENV`: `development` (default) or anything else (`production`, `staging`, ...). Outside
  development the service refuses to start with a default, empty, short (< 16 characters) or
  duplicated token, or with no token at all.
- `CITYSIGNAL_TOKENS`: comma-separated `name:role:token` entries, role one of viewer, operator, admin;
  `name` is who the audit log records. In development, when unset, three well-known tokens are used
  (`dev-viewer-token`, `dev-operator-token`, `dev-admin-token`) and printed at start-up.
- `CITYSIGNAL_READ_OPEN`: `1`/`true` opens the read endpoints (map, state, log, stream) without a
  token; default: every endpoint but `/api/health` needs one.
- `CITYSIGNAL_DB`: SQLAlchemy URL of the audit store (`--db` wins); default SQLite file
  `out/service/audit.db` under the working directory.
- `CITYSIGNAL_ORIGIN`: the origin browsers load the dashboard from, when it differs from the address
  the service listens on (behind a reverse proxy); CORS and the WebSocket origin check allow only it.
- `CITYSIGNAL_OVERRIDE_RATE`: `N/S`, a token bucket per user for hold/force overrides: a burst of N, then
  N per S seconds (default 10/60). Handing an intersection back (`mode: auto`) is never limited.
- `CITYSIGNAL_CONTROLLER_RATE`: `N/S`, the same for controller switches (default 10/60).
- `CITYSIGNAL_REFUSAL_AUDIT_RATE`: `N/S`, at most N audit rows per S seconds for the failed logins of one
  client address, and for the rate-limited requests of one user (default 10/60); the next row written
  carries the number left out (`suppressed`).

Bound to anything but a loopback address (0.0.0.0, ::, a LAN address or a host name), the service refuses
the default development tokens, whatever `CITYSIGNAL_ENV` says. A database URL is shown with its password
masked (`masked_url`); a SQLite file's folder is created by `validate`, so one that cannot be is a
one-line error.

Limits: settings are read once; changing them needs a restart. Tokens are static secrets compared in
constant time; there is no token expiry or rotation without a restart.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from citysignal.errors import UserError

DEVELOPMENT = "development"
DEFAULT_DB_URL = "sqlite:///out/service/audit.db"
MIN_TOKEN_LENGTH = 16
DEFAULT_RATE = (10, 60.0)
LOOPBACK_NAMES = ("localhost",)


class Role(IntEnum):
    """Roles in increasing power; a higher role may do all a lower one may."""

    viewer = 1
    operator = 2
    admin = 3


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    token: str


DEFAULT_TOKENS = (
    TokenEntry("viewer", Role.viewer, "dev-viewer-token"),
    TokenEntry("operator", Role.operator, "dev-operator-token"),
    TokenEntry("admin", Role.admin, "dev-admin-token"),
)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to know before it starts; build with `from_env`, then `validate`."""

    env: str
    tokens: tuple[TokenEntry, ...]
    read_open: bool
    db_url: str
    host: str
    port: int
    origin: str | None = None  # explicit public origin; None: derived from host and port
    override_limit: int = DEFAULT_RATE[0]
    override_window_s: float = DEFAULT_RATE[1]
    uses_default_tokens: bool = False
    controller_limit: int = DEFAULT_RATE[0]
    controller_window_s: float = DEFAULT_RATE[1]
    refusal_audit_limit: int = DEFAULT_RATE[0]
    refusal_audit_window_s: float = DEFAULT_RATE[1]

    @property
    def development(self) -> bool:
        return self.env == DEVELOPMENT

    def with_port(self, port: int) -> Settings:
        """The same settings once the listening port is known (port 0 asks the OS for a free one)."""
        from dataclasses import replace

        return replace(self, port=port)

    def allowed_origins(self) -> list[str]:
        """The origins the dashboard is served from: CORS and the WebSocket check allow only these."""
        if self.origin:
            return [self.origin.rstrip("/")]
        hosts = {self.host}
        if self.host in ("127.0.0.1", "localhost", "::1"):
            hosts |= {"127.0.0.1", "localhost"}
        return sorted(f"http://{h if ':' not in h else f'[{h}]'}:{self.port}" for h in hosts)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, host: str = "127.0.0.1", port: int = 8000,
        db_url: str | None = None,
    ) -> Settings:  # fmt: skip
        env_vars = os.environ if environ is None else environ
        env = env_vars.get("CITYSIGNAL_ENV", DEVELOPMENT).strip().lower() or DEVELOPMENT
        raw_tokens = env_vars.get("CITYSIGNAL_TOKENS")
        tokens: tuple[TokenEntry, ...]
        if raw_tokens is None and env == DEVELOPMENT:
            tokens, defaults = DEFAULT_TOKENS, True
        else:
            tokens, defaults = parse_tokens(raw_tokens or ""), False
        read_open = _flag(env_vars.get("CITYSIGNAL_READ_OPEN", "0"), "CITYSIGNAL_READ_OPEN")
        override = _rate(env_vars, "CITYSIGNAL_OVERRIDE_RATE")
        controller = _rate(env_vars, "CITYSIGNAL_CONTROLLER_RATE")
        refusal_audit = _rate(env_vars, "CITYSIGNAL_REFUSAL_AUDIT_RATE")
        return cls(
            env=env,
            tokens=tokens,
            read_open=read_open,
            db_url=db_url or env_vars.get("CITYSIGNAL_DB") or DEFAULT_DB_URL,
            host=host,
            port=port,
            origin=env_vars.get("CITYSIGNAL_ORIGIN") or None,
            override_limit=override[0],
            override_window_s=override[1],
            uses_default_tokens=defaults,
            controller_limit=controller[0],
            controller_window_s=controller[1],
            refusal_audit_limit=refusal_audit[0],
            refusal_audit_window_s=refusal_audit[1],
        )

    def validate(self) -> Settings:
        """Refuse unsafe or inconsistent settings in one line (UserError); returns self."""
        seen_tokens: set[str] = set()
        seen_names: set[str] = set()
        defaults = {t.token for t in DEFAULT_TOKENS}
        for entry in self.tokens:
            if entry.name in seen_names:
                raise UserError(f"CITYSIGNAL_TOKENS: name '{entry.name}' appears twice (names must be unique)")
            if entry.token in seen_tokens:
                raise UserError(f"CITYSIGNAL_TOKENS: two users share the token of '{entry.name}'")
            seen_names.add(entry.name)
            seen_tokens.add(entry.token)
            if not self.development:
                if not entry.token:
                    raise UserError(f"CITYSIGNAL_TOKENS: empty token for '{entry.name}' (env '{self.env}')")
                if entry.token in defaults:
                    raise UserError(
                        f"CITYSIGNAL_TOKENS: '{entry.name}' uses a default development token (env '{self.env}')"
                    )
                if len(entry.token) < MIN_TOKEN_LENGTH:
                    raise UserError(
                        f"CITYSIGNAL_TOKENS: token of '{entry.name}' is shorter than {MIN_TOKEN_LENGTH} characters "
                        f"(env '{self.env}')"
                    )
        if not self.development and not self.tokens:
            raise UserError(f"CITYSIGNAL_TOKENS is empty: set name:role:token entries to run in env '{self.env}'")
        if not is_loopback(self.host) and any(t.token in defaults for t in self.tokens):
            raise UserError(
                f"refusing to listen on {self.host} with the default development tokens: set CITYSIGNAL_TOKENS, "
                "or listen on 127.0.0.1"
            )
        if self.origin and not self.origin.startswith(("http://", "https://")):
            raise UserError(f"CITYSIGNAL_ORIGIN must start with http:// or https://, got '{self.origin}'")
        if not 0 <= self.port <= 65535:
            raise UserError(f"port {self.port} is outside 0..65535")
        _prepare_sqlite_folder(parse_db_url(self.db_url))
        return self


def is_loopback(host: str) -> bool:
    """True for a loopback address or `localhost`; a wildcard, LAN address or other host name is not."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def masked_url(url: str) -> str:
    """A database URL fit for logs and messages: the password (or, if it does not parse, all before '@') masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"://.*@", "://***@", url)


def parse_db_url(url: str) -> URL:
    """The audit store's URL, parsed; a malformed one is a UserError that never shows the password."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UserError(
            f"bad database URL '{masked_url(url)}': use e.g. sqlite:///out/service/audit.db or "
            "postgresql+psycopg://user:password@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite" and (parsed.username or parsed.password or parsed.host or parsed.port):
        raise UserError(f"bad database URL '{masked_url(url)}': a SQLite URL has no user, password or host "
                        "(sqlite:///relative/path.db or sqlite:////absolute/path.db)")  # fmt: skip
    return parsed


def _prepare_sqlite_folder(url: URL) -> None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    folder = Path(url.database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the folder of the audit database {folder}: {exc.strerror or exc}") from None


def parse_tokens(text: str) -> tuple[TokenEntry, ...]:
    """`name:role:token,...` (the token may itself contain ':'); a malformed entry is a UserError."""
    entries = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":", 2)
        if len(parts) != 3 or not parts[0]:
            raise UserError("CITYSIGNAL_TOKENS: each entry must be name:role:token")
        name, role, token = parts
        try:
            entries.append(TokenEntry(name, Role[role.strip().lower()], token))
        except KeyError:
            raise UserError(
                f"CITYSIGNAL_TOKENS: unknown role '{role}' for '{name}' (viewer, operator or admin)"
            ) from None
    return tuple(entries)


def _flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise UserError(f"{name} must be 1/0 or true/false, got '{value}'")


def _rate(env_vars: Mapping[str, str], name: str) -> tuple[int, float]:
    value = env_vars.get(name)
    if value is None or not value.strip():
        return DEFAULT_RATE
    try:
        n, _, s = value.partition("/")
        limit, window = int(n), float(s)
    except ValueError:
        raise UserError(f"{name} must be N/SECONDS (e.g. 10/60), got '{value}'") from None
    if limit < 1 or not 0 < window < float("inf"):
        raise UserError(f"{name} needs N >= 1 and SECONDS > 0, got '{value}'")
    return limit, window
