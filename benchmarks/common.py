"""Shared helpers for the benchmarks: Azurite on loopback, medians, tables."""
from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.azurite import Azurite, find_binary  # noqa: E402
from tests.conftest import free_port  # noqa: E402

# The last Azurite before 3.37.0, which made Append Block compute a CRC-64 of every appended byte in a
# JavaScript loop (see README, Benchmarks): the same append-blob API, without that CPU on this machine.
AZURITE_BEFORE_CRC64 = "3.36.0"


def azurite_binary(version: Optional[str] = None) -> str:
    """The test command's Azurite, or the given version from npm, installed under .tools/ on first use."""
    if version is None:
        binary = find_binary()
        if binary is None:
            raise SystemExit("Azurite not found: run ./scripts/test.sh once, which installs it with npm")
        return binary
    prefix = ROOT / ".tools" / f"azurite-{version}"
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        print(f"installing azurite@{version} into {prefix} (npm)", flush=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix),
                        f"azurite@{version}"], check=True, stdout=subprocess.DEVNULL)
    return str(binary)


def azurite_version(binary: str) -> str:
    """The version in the package.json above an azurite-blob launcher."""
    for folder in Path(binary).resolve().parents:
        manifest = folder / "package.json"
        if manifest.exists():
            return json.loads(manifest.read_text())["version"]
    return "?"


@contextlib.contextmanager
def azurite(binary: Optional[str] = None) -> Iterator[Azurite]:
    with tempfile.TemporaryDirectory() as location:
        server = Azurite(Path(location), free_port(), binary=binary).start()
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
