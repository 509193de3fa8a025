"""Opening SUMO's XML inputs: plain or gzipped, told apart by content, as SUMO itself does.

SUMO reads `.gz` and plain files alike whatever their names say, so a file named `.xml` may hold gzip and
one named `.gz` may be plain text. Telling them apart by the gzip magic bytes accepts exactly what SUMO
accepts. A gzip stream that is truncated or corrupt fails while it is read (`EOFError`, `OSError`), not here.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


def open_xml(path: Path) -> io.BufferedIOBase:
    """`path` for reading as bytes, decompressed when it is gzip."""
    with path.open("rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")
