"""Import time of `tally_client` against `import httpx`, each in a fresh interpreter.

tally_client is compiled to bytecode first, as `pip install` does: an editable install under
PYTHONDONTWRITEBYTECODE=1 would otherwise recompile it on every import, while httpx's bytecode
was written when it was installed. Runs alternate (httpx, ours, httpx, ...) and medians are
compared. `import tally_client` includes importing httpx itself. Target: at most 1.3x.
"""

from __future__ import annotations

import compileall
import statistics
import subprocess
import sys
from pathlib import Path

from ._common import QUICK, check

SECTION = "imports"
TARGET = 1.3
ROUNDS = 5 if QUICK else 15


def compile_package() -> None:
    """Write tally_client's bytecode, as installing the package would."""
    import tally_client

    compileall.compile_dir(Path(tally_client.__file__).parent, quiet=1)


def import_seconds(module: str) -> float:
    """Seconds to import `module` in a fresh interpreter."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout)


def run() -> None:
    """Print the import line."""
    print(f"{SECTION}: fresh interpreter, bytecode compiled, median of {ROUNDS}")
    compile_package()
    times: dict[str, list[float]] = {"httpx": [], "tally_client": []}
    for r in range(ROUNDS):
        order = ["httpx", "tally_client"] if r % 2 == 0 else ["tally_client", "httpx"]
        for module in order:
            times[module].append(import_seconds(module))
    base, ours = statistics.median(times["httpx"]), statistics.median(times["tally_client"])
    check(SECTION, "import", ("import httpx", base), ("import tally_client", ours),
          unit="ms", scale=1e3, most=TARGET)  # fmt: skip
