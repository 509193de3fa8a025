"""Controllers by name, for the CLI, the benchmark and the service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from citysignal.control.adaptive import Actuated, AdvancedMaxPressure, MaxPressure, Sotl
from citysignal.control.ai import AiController, AiWithoutTrustRegion
from citysignal.control.base import Controller
from citysignal.control.cycle import FixedTime, Webster
from citysignal.errors import UserError

FACTORIES: dict[str, Callable[[], Controller]] = {
    "fixed": FixedTime,
    "actuated": Actuated,
    "webster": Webster,
    "maxpressure": MaxPressure,
    "advanced_mp": AdvancedMaxPressure,
    "sotl": Sotl,
    "ai": AiController,
    "ai_free": AiWithoutTrustRegion,
}


def controller_names() -> list[str]:
    return list(FACTORIES)


def make_controller(name: str, policy: Path | None = None) -> Controller:
    """A fresh controller; `policy` is the weights file of the `ai` controllers (default: shipped)."""
    if name == "ai":
        return AiController(policy)
    if name == "ai_free":
        return AiWithoutTrustRegion(policy)
    if policy is not None:
        raise UserError(f"--policy applies to the ai controller, not '{name}'")
    try:
        return FACTORIES[name]()
    except KeyError:
        raise UserError(f"unknown controller '{name}' (choose from: {', '.join(FACTORIES)})") from None
