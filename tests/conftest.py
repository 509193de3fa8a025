"""Shared fixtures: bundled scenarios, their parsed networks and layouts (parsed once per session).

The package is normally installed in the venv (`make test` runs `pip install -e .`); when it is not,
`src/` is put on the path so the suite still runs from a bare checkout.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

if importlib.util.find_spec("citysignal") is None:  # pragma: no cover - depends on the environment
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bundled import bundled_layout, bundled_network, bundled_scenario

from citysignal.network import Network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario


@pytest.fixture(scope="session")
def network_of() -> Callable[[str], Network]:
    """`network_of(name)`: the parsed network of a bundled scenario (cached for the session)."""
    return bundled_network


@pytest.fixture(scope="session")
def layout_of() -> Callable[[str], Layout]:
    """`layout_of(name)`: the layout of a bundled scenario's network (cached for the session)."""
    return bundled_layout


@pytest.fixture(scope="session")
def scenario_of() -> Callable[[str], Scenario]:
    """`scenario_of(name)`: a bundled scenario with its own window."""
    return bundled_scenario
