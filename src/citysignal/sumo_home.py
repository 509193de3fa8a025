"""Locate Eclipse SUMO through the installed `eclipse-sumo` wheel, so users never set SUMO_HOME.

Resolved on demand (no import-time side effects); an explicit SUMO_HOME still wins, which lets a
city run a system-wide SUMO build.
"""

from __future__ import annotations

import os
from pathlib import Path

from citysignal.errors import UserError


def sumo_home() -> Path:
    """The SUMO installation directory (bin/, tools/, data/)."""
    env = os.environ.get("SUMO_HOME")
    if env and (Path(env) / "bin").is_dir():
        return Path(env)
    try:
        import sumo
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise UserError("Eclipse SUMO is not installed: pip install eclipse-sumo") from exc
    return Path(sumo.SUMO_HOME)


def binary(name: str) -> str:
    """Path of a SUMO executable such as `sumo`, `sumo-gui` or `netconvert`."""
    path = sumo_home() / "bin" / name
    if not path.exists():
        raise UserError(f"SUMO executable not found: {path}")
    return str(path)


def tool(relative: str) -> Path:
    """Path of a script under SUMO's tools/ directory, e.g. `tlsCycleAdaptation.py`."""
    return sumo_home() / "tools" / relative
