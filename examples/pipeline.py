"""A pipeline: many prompts through map(), resumable from a checkpoint file."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tally_client import Client

WORDS = ["bread", "granite", "violin", "comet", "tulip", "carburettor", "falcon", "teapot"]


def main() -> None:
    checkpoint = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp()) / "labels.jsonl"
    prompts = [f"In one word, is a {w} an animal, a plant, a tool or a thing?" for w in WORDS]
    with Client() as client:
        results = client.map(prompts, concurrency=4, checkpoint=checkpoint, max_tokens=4)
        for word, response in zip(WORDS, results, strict=True):
            print(f"{word:12} -> {response.text.strip() if response else 'failed'}")
        print(f"{len(results.errors)} failed; usage: {results.usage}")
        again = client.map(prompts, concurrency=4, checkpoint=checkpoint, max_tokens=4)
        print(f"rerun: {again.resumed} of {len(again)} items taken from the checkpoint")


if __name__ == "__main__":
    main()
