"""Structured output: a Pydantic model in, partial objects while streaming, a validated one out."""

from __future__ import annotations

from pydantic import BaseModel, Field

from tally_client import Client


class Post(BaseModel):
    title: str
    tags: list[str] = Field(max_length=3)


def main() -> None:
    with Client() as client:
        # Streaming structured output is unusual (the router would choose atomic), but a UI
        # may want to show the object as it grows: partial_objects() yields it, at a cost
        # linear in the output. The values are partial dicts, never the validated Post.
        with client.stream("A title and three tags for a post about bread, as JSON.",
                           schema=Post, max_tokens=80, temperature=0) as stream:  # fmt: skip
            for partial in stream.partial_objects():
                print("so far:", partial)
        post = stream.final().parsed  # a Post; StructuredOutputError if it does not match
        print("parsed:", repr(post))


if __name__ == "__main__":
    main()
