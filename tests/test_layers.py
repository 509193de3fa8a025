"""Import direction between the packages: each package's modules, imported alone in a fresh interpreter,
pull in none of the packages it must not depend on."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import importlib, pkgutil, sys
import citysignal.{package} as pkg
for m in pkgutil.walk_packages(getattr(pkg, "__path__", []), pkg.__name__ + "."):
    importlib.import_module(m.name)
print(" ".join(sorted(sys.modules)))
"""

FORBIDDEN = {
    # the network model is read from SUMO files only: it knows no scenario, twin, controller or consumer
    "network": ("citysignal.scenarios", "citysignal.twin", "citysignal.control", "citysignal.loop",
                "citysignal.bench", "citysignal.learn", "citysignal.service"),
    # controllers and the loop never touch the simulator: its backend does
    "control": ("libsumo", "traci", "citysignal.loop", "citysignal.bench", "citysignal.learn", "citysignal.service"),
    "loop": ("libsumo", "traci", "citysignal.bench", "citysignal.learn", "citysignal.service"),
}  # fmt: skip


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(package=package)], capture_output=True, text=True, check=True
    ).stdout.split()
    bad = sorted(m for m in out if m.startswith(FORBIDDEN[package]))
    assert not bad, f"citysignal.{package} imports {bad}"
