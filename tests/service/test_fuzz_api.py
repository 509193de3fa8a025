"""schemathesis against the live OpenAPI schema of a real `citysignal serve` on loopback.

Every operation of /api/openapi.json gets EXAMPLES generated requests, valid and invalid ones
(schemathesis' positive and negative modes). On SQLite, the default store, each operation gets them
with a viewer's, an operator's and an admin's token in turn; on a real PostgreSQL server (what SQLite
stores, PostgreSQL may refuse) each example draws one of the three tokens. Bounded and reproducible: a
fixed number of examples, derandomized (a seed derived from the test), no example database, no
shrinking. The service must never answer 5xx, nor die, and its log (stdout and stderr) must never show
a traceback. The service runs without rate limits (see `serve_env`), so generated requests reach the
twin, the safety guard and the store instead of stopping at 429.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.schemas import OpenApiSchema
from service_helpers import TOKEN, Served, auth, start_serve, stop_serve

from citysignal.service.routes import router

EXAMPLES = 100
WHO = ("vera", "otto", "ada")  # viewer, operator, admin
LOG_ALARMS = ("Traceback", "Exception in ASGI application", "Internal Server Error")
SERVE = ["grid4x4", "--controller", "maxpressure", "--speed", "20", "--begin", "0", "--end", "1800", "--port", "0"]
RUNS = [("sqlite", who) for who in WHO] + [("postgresql", "any")]
Operation = APIOperation[Any, Any, Any, Any]


@dataclass
class Target:
    """A running service and what it has logged so far."""

    served: Served
    schema: OpenApiSchema
    http: requests.Session
    intersections: list[str]
    controllers: list[str]
    log_offset: int = 0

    def new_log(self) -> str:
        with self.served.log.open("rb") as fh:
            fh.seek(self.log_offset)
            data = fh.read()
        self.log_offset += len(data)
        return data.decode("utf-8", "replace")


@pytest.fixture(scope="module")
def target_on(
    tmp_path_factory: pytest.TempPathFactory, serve_env: dict[str, str], new_database: Callable[[str, Path], str]
) -> Iterator[Callable[[str], Target]]:
    """`target_on(backend)`: the service on that backend, started on first use (one twin at a time)."""
    running: dict[str, Target] = {}

    def get(backend: str) -> Target:
        if backend not in running:
            for other in running.values():
                other.http.close()
                stop_serve(other.served)
            running.clear()
            folder = tmp_path_factory.mktemp(f"fuzz-{backend}")
            served = start_serve([*SERVE, "--db", new_database(backend, folder)], folder / "serve.log", serve_env)
            schema = schemathesis.openapi.from_url(f"{served.url}/api/openapi.json")
            with served.client(TOKEN["vera"]) as http:
                names = [i["id"] for i in http.get("/api/network").json()["intersections"]]
                controllers = list(http.get("/api/info").json()["controllers"])
            running[backend] = Target(served, schema, requests.Session(), names, controllers)
        return running[backend]

    try:
        yield get
    finally:
        for target in running.values():
            target.http.close()
            stop_serve(target.served)


def cases(operation: Operation, target: Target) -> st.SearchStrategy[schemathesis.Case[Operation]]:
    """Valid and invalid requests as schemathesis makes them, and valid ones that name what exists: generated
    intersection ids and controller names are nearly all unknown (404, 422) and would never reach the engine,
    the safety guard, a controller switch or a what-if race."""
    made = [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    if "{inter_id}" in operation.path:
        made += [operation.as_strategy(GenerationMode.POSITIVE, path_parameters={"inter_id": name})
                 for name in target.intersections]  # fmt: skip
    if operation.label == "POST /api/controller":
        existing = st.fixed_dictionaries(
            {"controller": st.sampled_from(target.controllers)},
            optional={"intersections": st.lists(st.sampled_from(target.intersections), min_size=1, max_size=4)},
        )
        made.append(st.tuples(made[0], existing).map(lambda pair: replace_body(*pair)))
    if operation.label == "POST /api/whatif":
        racing = st.fixed_dictionaries({
            "candidates": st.lists(st.sampled_from(target.controllers), min_size=1, max_size=3, unique=True),
            "horizon": st.integers(60, 300),
        })  # fmt: skip
        made.append(st.tuples(made[0], racing).map(lambda pair: replace_body(*pair)))
    return st.one_of(made)


def replace_body(case: schemathesis.Case[Operation], body: dict[str, Any]) -> schemathesis.Case[Operation]:
    case.body = body
    return case


def fuzz(operation: Operation, tokens: tuple[str, ...], target: Target) -> Counter[tuple[str, int]]:
    """Send EXAMPLES generated requests to `operation`, each with one of `tokens`; how many per (token, status)."""
    sent: Counter[tuple[str, int]] = Counter()

    @given(case=cases(operation, target), who=st.sampled_from(tokens))
    @settings(max_examples=EXAMPLES, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
              deadline=None, suppress_health_check=list(HealthCheck))  # fmt: skip
    def one(case: schemathesis.Case[Operation], who: str) -> None:
        headers = auth(who)
        response = case.call(base_url=target.served.url, session=target.http, headers=headers, timeout=30)
        sent[(who, response.status_code)] += 1
        case.validate_response(response, checks=[not_a_server_error], headers=headers)
        logged = target.new_log()
        assert not any(alarm in logged for alarm in LOG_ALARMS), logged
        assert target.served.proc.poll() is None, "the service died"

    one()
    return sent


@pytest.mark.parametrize(("backend", "who"), RUNS)
def test_no_server_error_and_no_traceback(backend: str, who: str, target_on: Callable[[str], Target]) -> None:
    target = target_on(backend)
    results = list(target.schema.get_all_operations())
    assert all(isinstance(r, Ok) for r in results), results  # the live schema is valid OpenAPI
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    labels = {op.label for op in operations}
    routes = {f"{method} {route.path}" for route in router.routes if isinstance(route, APIRoute)
              for method in route.methods or ()}  # fmt: skip
    assert routes <= labels, routes - labels  # the live schema has every route: the fuzzing misses none
    tokens = WHO if who == "any" else (who,)
    sent = {op.label: fuzz(op, tokens, target) for op in operations}
    print(f"\nschemathesis on {backend} as {who}: {sum(sum(c.values()) for c in sent.values())} requests")
    for label, counts in sent.items():
        print(f"  {label}: {sum(counts.values())}", dict(sorted(counts.items())))
    # the fuzzing went past validation: every operation the tokens may use answered 2xx at least once
    allowed = [label for label in sent if label.startswith("GET") or who != "vera"]
    assert all(any(200 <= status < 300 for _, status in sent[label]) for label in allowed), sent
