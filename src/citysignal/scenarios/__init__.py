"""Scenarios: bundled SUMO scenarios with their episode windows, or any `.sumocfg` by path."""

from citysignal.scenarios.registry import Scenario, bundled_names, demand_summary, load_sumocfg, resolve

__all__ = ["Scenario", "bundled_names", "demand_summary", "load_sumocfg", "resolve"]
