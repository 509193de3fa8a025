"""The command-center web page: static, dependency-free HTML/CSS/JS served by `citysignal.service`.

No CDN, no build step: `static/` holds the files as served. The map and charts are drawn on
<canvas> by the page's own code.
"""

from __future__ import annotations

from pathlib import Path


def static_dir() -> Path:
    """The folder with index.html, app.js and style.css."""
    return Path(__file__).resolve().parent / "static"
