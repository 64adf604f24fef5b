"""The README's quickstart, runnable: routing, a stream, an atomic call, respond().

With no provider key set, `Client()` talks to the local OpenAI-compatible server at
$TALLY_LOCAL_BASE_URL (default http://127.0.0.1:8080/v1); start one with
`python -m tally_client.testing.llama serve`.
"""

from __future__ import annotations

from tally_client import Client


def main() -> None:
    with Client() as client:
        decision = client.route(
            consumer="human", structure_type="prose", expected_output_tokens=800
        )
        print("route:", "stream" if decision.stream else "atomic", decision.confidence)

        with client.stream("Explain entropy in three sentences.", max_tokens=80) as stream:
            for text in stream.text():
                print(text, end="", flush=True)
        response = stream.final()
        r, m = response, response.metrics
        print(
            f"\n[{r.state}, {r.finish_reason}, {r.usage.output_tokens} tokens, TTFT {m.ttft:.3f} s]"
        )

        answer = client.complete("Name the capital of France.", max_tokens=20)
        print("complete:", answer.text.strip(), f"({answer.usage.total_tokens} tokens)")

        reply = client.respond("Tell me a story.", consumer="human", max_tokens=60)
        print("respond chose:", "stream" if reply.decision and reply.decision.stream else "atomic")
        print(reply.final().text.strip())


if __name__ == "__main__":
    main()
