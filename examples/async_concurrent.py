"""Three streams at once with AsyncClient; each prints its time to first token."""

from __future__ import annotations

import anyio

from tally_client import AsyncClient

QUESTIONS = ["What is a prime number?", "Why is the sky blue?", "What is an atom?"]


async def ask(client: AsyncClient, question: str) -> None:
    async with client.stream(question, max_tokens=40) as stream:
        text = "".join([piece async for piece in stream.text()])
    response = await stream.final()
    m, u = response.metrics, response.usage
    print(f"{question}\n  TTFT {m.ttft:.3f} s, {u.output_tokens} tokens: {text.strip()[:70]}...")


async def main() -> None:
    async with AsyncClient() as client, anyio.create_task_group() as tg:
        for question in QUESTIONS:
            tg.start_soon(ask, client, question)


if __name__ == "__main__":
    anyio.run(main)
