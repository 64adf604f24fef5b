"""Run the benchmark sections: `python -m benchmarks [SECTION ...] [--quick]` (or `make bench`).

Every line prints the baseline, ours, the ratio (or the added time) and its target, measured
in the same run. The exit status is 1 when a target is not met.

Adding a section is one line in `SECTIONS` below: the name and the module; the module has a
`run() -> None` that prints its lines through `benchmarks._common.check()` (see README.md), or
a `main() -> int` of its own (exit status 0 when its targets are met, `--quick` accepted), run
with its defaults.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

SECTIONS: dict[str, str] = {
    "streaming": "benchmarks.streaming",
    "concurrency": "benchmarks.concurrency",
    "imports": "benchmarks.imports",
    "first_token": "benchmarks.first_token",
    "structured": "benchmarks.structured",
    "web": "benchmarks.web",
    "pipelines": "benchmarks.pipelines",
    "routing": "benchmarks.routing",
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "sections", nargs="*", metavar="SECTION", help=f"default all: {', '.join(SECTIONS)}"
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs, to try a change")
    args = parser.parse_args()
    unknown = [s for s in args.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"  # read by _common at import, before any section loads
    from ._common import RESULTS, Result

    for name in args.sections or SECTIONS:
        started = time.perf_counter()
        module = importlib.import_module(SECTIONS[name])
        if not hasattr(module, "main"):
            module.run()
        else:  # a benchmark with its own main() and options: run it with its defaults
            saved, sys.argv = sys.argv, [module.__name__, *(["--quick"] if args.quick else [])]
            try:
                status = module.main()
            finally:
                sys.argv = saved
            if status:
                RESULTS.append(Result(name, "its own targets", status, "see above", False, "-"))
        print(f"  ({name}: {time.perf_counter() - started:.0f} s)\n", flush=True)
    missed = [r for r in RESULTS if not r.met]
    for r in missed:
        print(f"NOT MET: {r.section}: {r.name}: {r.verdict}")
    print("all targets met" if not missed else f"{len(missed)} of {len(RESULTS)} lines not met")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
