"""The bundled scenarios, their parsed networks and layouts, parsed once per test session.

A module of its own (not conftest.py): test modules import it by name, and another conftest.py (e.g.
tests/service/) would shadow a `from conftest import ...`.
"""

from __future__ import annotations

from functools import cache

from citysignal.network import Network, load_network
from citysignal.network.layout import Layout
from citysignal.scenarios import Scenario, bundled_names, resolve

BUNDLED = bundled_names()


@cache
def bundled_scenario(name: str) -> Scenario:
    return resolve(name)


@cache
def bundled_network(name: str) -> Network:
    sc = bundled_scenario(name)
    return load_network(sc.net_file, sc.additional_files)


@cache
def bundled_layout(name: str) -> Layout:
    return Layout.from_network(bundled_network(name))
