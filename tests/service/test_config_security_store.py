"""Settings validation, token checks, the rate limits and the audit throttle, without a twin.

(The audit store: test_store.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from citysignal.errors import UserError
from citysignal.service.config import DEFAULT_TOKENS, Role, Settings, is_loopback, masked_url, parse_tokens
from citysignal.service.security import AuditThrottle, RateLimits, TokenBucket, TokenRegistry, bearer_token

STRONG = "alice:admin:0123456789abcdef-strong,bob:viewer:fedcba9876543210-strong"


def settings(**env: str) -> Settings:
    return Settings.from_env(env, db_url="sqlite://")


def test_development_without_tokens_uses_the_known_defaults() -> None:
    s = settings().validate()
    assert s.development and s.uses_default_tokens
    assert s.tokens == DEFAULT_TOKENS


@pytest.mark.parametrize(
    ("tokens", "fragment"),
    [
        (None, "CITYSIGNAL_TOKENS is empty"),
        ("", "CITYSIGNAL_TOKENS is empty"),
        ("ops:operator:dev-operator-token", "default development token"),
        ("ops:operator:", "empty token"),
        ("ops:operator:short", "shorter than 16"),
        ("a:admin:0123456789abcdef-x,a:viewer:0123456789abcdef-y", "appears twice"),
        ("a:admin:0123456789abcdef-x,b:viewer:0123456789abcdef-x", "share the token"),
    ],
)
def test_production_refuses_unsafe_tokens(tokens: str | None, fragment: str) -> None:
    env = {"CITYSIGNAL_ENV": "production"}
    if tokens is not None:
        env["CITYSIGNAL_TOKENS"] = tokens
    with pytest.raises(UserError, match=fragment):
        settings(**env).validate()


def test_production_accepts_strong_tokens_and_reads_the_other_variables() -> None:
    s = settings(CITYSIGNAL_ENV="production", CITYSIGNAL_TOKENS=STRONG, CITYSIGNAL_READ_OPEN="true",
                 CITYSIGNAL_OVERRIDE_RATE="3/10", CITYSIGNAL_CONTROLLER_RATE="2/30",
                 CITYSIGNAL_REFUSAL_AUDIT_RATE="5/1", CITYSIGNAL_ORIGIN="https://cc.example.org",
                 ).validate()  # fmt: skip
    assert [(t.name, t.role) for t in s.tokens] == [("alice", Role.admin), ("bob", Role.viewer)]
    assert s.read_open and (s.override_limit, s.override_window_s) == (3, 10.0)
    assert (s.controller_limit, s.controller_window_s) == (2, 30.0)
    assert (s.refusal_audit_limit, s.refusal_audit_window_s) == (5, 1.0)
    assert s.allowed_origins() == ["https://cc.example.org"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "fe80::1", "citysignal.lan"])
def test_default_tokens_are_refused_off_loopback(host: str) -> None:
    assert not is_loopback(host)
    with pytest.raises(UserError, match=f"refusing to listen on {host} with the default development tokens"):
        Settings.from_env({}, host=host, db_url="sqlite://").validate()
    # an explicit default token in development is refused the same way; strong tokens are fine
    dev_token = {"CITYSIGNAL_TOKENS": "ops:operator:dev-operator-token"}
    with pytest.raises(UserError, match="default development tokens"):
        Settings.from_env(dev_token, host=host, db_url="sqlite://").validate()
    assert Settings.from_env({"CITYSIGNAL_TOKENS": STRONG}, host=host, db_url="sqlite://").validate().host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost", "LOCALHOST"])
def test_default_tokens_are_fine_on_loopback(host: str) -> None:
    assert is_loopback(host)
    assert Settings.from_env({}, host=host, db_url="sqlite://").validate().uses_default_tokens


@pytest.mark.parametrize(
    ("url", "shown"),
    [("postgresql+psycopg://ops:s3cret@db.example:5432/audit", "postgresql+psycopg://ops:***@db.example:5432/audit"),
     ("postgresql://ops:s3cret@db.example:notaport/audit", "postgresql://***@db.example:notaport/audit"),
     ("postgresql://ops:s3c/ret@db.example/audit", "postgresql://ops:***@db.example/audit"),
     ("sqlite:///out/audit.db", "sqlite:///out/audit.db")],
)  # fmt: skip
def test_database_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert masked_url(url) == shown


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("postgresql://ops:s3cret@db.example:notaport/audit", "bad database URL 'postgresql://***@db.example"),
     ("sqlite://ops:s3cret@/audit.db", "a SQLite URL has no user, password or host"),
     ("sqlite:////proc/nope/audit.db", "cannot create the folder of the audit database /proc/nope")],
)  # fmt: skip
def test_bad_database_urls_are_refused_by_the_settings(url: str, fragment: str) -> None:
    with pytest.raises(UserError, match=re.escape(fragment)) as info:
        Settings.from_env({}, db_url=url).validate()
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)


def test_settings_create_the_folder_of_a_sqlite_database(tmp_path: Path) -> None:
    Settings.from_env({}, db_url=f"sqlite:///{tmp_path / 'a' / 'b' / 'audit.db'}").validate()
    assert (tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CITYSIGNAL_TOKENS": "nocolons"}, "name:role:token"),
        ({"CITYSIGNAL_TOKENS": "a:root:0123456789abcdef"}, "unknown role 'root'"),
        ({"CITYSIGNAL_READ_OPEN": "maybe"}, "CITYSIGNAL_READ_OPEN"),
        ({"CITYSIGNAL_OVERRIDE_RATE": "ten"}, "CITYSIGNAL_OVERRIDE_RATE"),
        ({"CITYSIGNAL_OVERRIDE_RATE": "0/60"}, "N >= 1"),
        ({"CITYSIGNAL_CONTROLLER_RATE": "5/nan"}, "CITYSIGNAL_CONTROLLER_RATE needs"),
        ({"CITYSIGNAL_REFUSAL_AUDIT_RATE": "5"}, "CITYSIGNAL_REFUSAL_AUDIT_RATE must be N/SECONDS"),
        ({"CITYSIGNAL_ORIGIN": "cc.example.org"}, "CITYSIGNAL_ORIGIN"),
    ],
)
def test_malformed_settings_are_one_line_errors(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as info:
        settings(**env).validate()
    assert "\n" not in str(info.value)


def test_served_origin_covers_both_loopback_names() -> None:
    s = Settings.from_env({}, host="127.0.0.1", port=8123)
    assert s.allowed_origins() == ["http://127.0.0.1:8123", "http://localhost:8123"]


def test_token_registry_finds_the_right_principal_and_nothing_else() -> None:
    registry = TokenRegistry(parse_tokens(STRONG + ",empty:operator:"))
    alice = registry.authenticate("0123456789abcdef-strong")
    assert alice is not None and alice.name == "alice" and alice.role is Role.admin
    assert registry.authenticate("0123456789abcdef-stron") is None  # a prefix is not the token
    assert registry.authenticate("0123456789abcdef-strongX") is None
    assert registry.authenticate("") is None and registry.authenticate(None) is None  # an empty token never matches


def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


def test_token_bucket_allows_a_burst_then_a_steady_rate_per_key() -> None:
    now = [0.0]
    bucket = TokenBucket(2, 10.0, clock=lambda: now[0])  # 2 at once, then one every 5 s
    assert bucket.take("a") == 0.0 and bucket.take("a") == 0.0
    assert bucket.take("a") == pytest.approx(5.0)
    assert bucket.take("b") == 0.0  # another user is not affected
    now[0] = 4.0
    assert bucket.take("a") == pytest.approx(1.0)
    now[0] = 5.0
    assert bucket.take("a") == 0.0 and bucket.take("a") > 0
    now[0] = 1000.0  # a long pause refills no more than the burst
    assert [bucket.take("a") for _ in range(3)][:2] == [0.0, 0.0] and bucket.take("a") > 0


def test_rate_limits_keep_one_bucket_per_class() -> None:
    now = [0.0]
    limits = RateLimits(settings(CITYSIGNAL_OVERRIDE_RATE="1/60", CITYSIGNAL_CONTROLLER_RATE="2/60"),
                        clock=lambda: now[0])  # fmt: skip
    assert limits.take("override", "otto") == 0.0 and limits.take("override", "otto") > 0
    assert limits.take("controller", "otto") == 0.0 and limits.take("controller", "otto") == 0.0
    assert limits.take("controller", "otto") == pytest.approx(30.0)


def test_audit_throttle_counts_the_rows_it_leaves_out() -> None:
    now = [0.0]
    throttle = AuditThrottle(2, 60.0, clock=lambda: now[0])
    assert [throttle.admit("10.0.0.9") for _ in range(5)] == [0, 0, None, None, None]
    assert throttle.admit("10.0.0.8") == 0  # per key
    now[0] = 59.0
    assert throttle.admit("10.0.0.9") is None
    now[0] = 60.0
    assert throttle.admit("10.0.0.9") == 4  # the next row written says how many were left out
    assert throttle.admit("10.0.0.9") == 0


def test_audit_throttle_stays_bounded_under_many_addresses() -> None:
    now = [0.0]
    throttle = AuditThrottle(1, 60.0, clock=lambda: now[0])
    addresses = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(3 * AuditThrottle.MAX_KEYS)]
    admitted = [throttle.admit(a) for a in addresses]
    assert admitted.count(0) == AuditThrottle.MAX_KEYS + 1  # past the cap, new addresses share one key ...
    assert len(throttle._rows) == AuditThrottle.MAX_KEYS + 1  # ... so memory stays bounded
    now[0] = 30.0
    assert throttle.admit("192.168.0.1") is None  # still the shared key: its window has not passed
    now[0] = 61.0
    assert throttle.admit("192.168.0.2") == 0  # idle keys are forgotten once their window has passed
    assert len(throttle._rows) <= 2
