"""`python -m tally_client` and the `tally` script: the command line (`tally_client.cli`).

click is imported here, on demand, so `import tally_client` never loads it.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run `tally`; without the `cli` extra installed, say how to install it (exit 3)."""
    try:
        from .cli import run
    except ModuleNotFoundError as exc:
        if exc.name not in ("click", "yaspin", "jsonschema"):
            raise
        sys.stderr.write(
            f"tally needs the 'cli' extra ({exc.name} is missing): "
            "pip install 'tally-client[cli]'\n"
        )
        raise SystemExit(3) from None
    run()


if __name__ == "__main__":
    main()
