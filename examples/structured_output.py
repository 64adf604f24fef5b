"""Structured output: a JSON schema, a tolerant parse while streaming, a strict one at the end."""

from __future__ import annotations

from tally_client import Client

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["title", "tags"],
}


def main() -> None:
    with Client() as client:
        # Streaming structured output is unusual (the router would choose atomic), but a UI
        # may still want to show the object as it grows: partial_json() is the tolerant view.
        with client.stream("A title and three tags for a post about bread, as JSON.",
                           schema=SCHEMA, max_tokens=80, temperature=0) as stream:  # fmt: skip
            for _ in stream.text():
                print("so far:", stream.partial_json())
        response = stream.final()  # strict: raises StructuredOutputError if it is not JSON
        print("parsed:", response.parsed)


if __name__ == "__main__":
    main()
