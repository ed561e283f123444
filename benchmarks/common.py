"""Shared helpers for the benchmarks: Azurite on loopback, medians, tables."""
from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.azurite import Azurite  # noqa: E402
from tests.conftest import free_port  # noqa: E402


@contextlib.contextmanager
def azurite() -> Iterator[Azurite]:
    with tempfile.TemporaryDirectory() as location:
        server = Azurite(Path(location), free_port()).start()
        try:
            yield server
        finally:
            server.stop()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def table(header: List[str], rows: List[List[object]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
