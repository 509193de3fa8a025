"""Settings validation, token checks and the rate limit, without a twin (the audit store: test_store.py)."""

from __future__ import annotations

import pytest

from citysignal.errors import UserError
from citysignal.service.config import DEFAULT_TOKENS, Role, Settings, parse_tokens
from citysignal.service.security import RateLimiter, TokenRegistry, bearer_token

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
                 CITYSIGNAL_OVERRIDE_RATE="3/10", CITYSIGNAL_ORIGIN="https://cc.example.org").validate()  # fmt: skip
    assert [(t.name, t.role) for t in s.tokens] == [("alice", Role.admin), ("bob", Role.viewer)]
    assert s.read_open and (s.override_limit, s.override_window_s) == (3, 10.0)
    assert s.allowed_origins() == ["https://cc.example.org"]


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CITYSIGNAL_TOKENS": "nocolons"}, "name:role:token"),
        ({"CITYSIGNAL_TOKENS": "a:root:0123456789abcdef"}, "unknown role 'root'"),
        ({"CITYSIGNAL_READ_OPEN": "maybe"}, "CITYSIGNAL_READ_OPEN"),
        ({"CITYSIGNAL_OVERRIDE_RATE": "ten"}, "CITYSIGNAL_OVERRIDE_RATE"),
        ({"CITYSIGNAL_OVERRIDE_RATE": "0/60"}, "N >= 1"),
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


def test_rate_limiter_is_a_sliding_window_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(2, 10.0, clock=lambda: now[0])
    assert limiter.hit("a") == 0.0 and limiter.hit("a") == 0.0
    assert limiter.hit("a") == pytest.approx(10.0)
    assert limiter.hit("b") == 0.0  # another user is not affected
    now[0] = 9.0
    assert limiter.hit("a") == pytest.approx(1.0)
    now[0] = 10.0
    assert limiter.hit("a") == 0.0
