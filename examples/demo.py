"""The tally_client demo, on a real local model (llama-server + SmolLM2-135M-Instruct).

    make demo            # provisions the model once (about 7 minutes), then runs this

1. Three envelopes (chat UI, JSON extraction, short classification): the router's decision,
   its confidence and its reasons.
2. A streamed answer, printed as it arrives, with TTFT and tokens per second.
3. An atomic JSON answer, parsed against a schema.
4. Usage for each call.

Pass a base URL to use a server you already run: `python examples/demo.py http://HOST:PORT/v1`.
"""

from __future__ import annotations

import sys

from tally_client import Client, Response
from tally_client.testing.llama import LlamaServer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "city": {"type": "string"},
    },
    "required": ["name", "age", "city"],
}


def show_decisions(client: Client) -> None:
    print("== 1. Routing: three envelopes ==")
    cases = [
        (
            "chat UI (a person reads prose)",
            client.route(consumer="human", structure_type="prose", expected_output_tokens=800),
        ),
        ("JSON extraction (a machine parses it)", client.route(consumer="machine", schema=SCHEMA)),
        (
            "short classification",
            client.route(consumer="machine", task_type="classification", expected_output_tokens=5),
        ),
    ]
    for label, d in cases:
        mode = "stream" if d.stream else "atomic"
        confidence = f"mode {d.confidence.stream:.2f}, model {d.confidence.model:.2f}"
        print(f"\n{label}: {mode} with {d.model!r} (confidence: {confidence})")
        for reason in d.reasons:
            print(f"   - {reason}")


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def timing_line(r: Response) -> str:
    m = r.metrics
    rate = "n/a" if m.output_tokens_per_second is None else f"{m.output_tokens_per_second:.0f}"
    return (
        f"TTFT {ms(m.ttft)}, {rate} tokens/s, inter-token latency mean {ms(m.itl_mean)} / "
        f"p95 {ms(m.itl_p95)}, {m.chunks} chunks, {ms(m.total_seconds)} in all"
    )


def usage_line(label: str, r: Response) -> str:
    u = r.usage
    counts = f"{u.input_tokens} in / {u.output_tokens} out / {u.total_tokens} total"
    reported = "reported by the server" if u.reported else "NOT reported"
    return f"{label:<10} {counts} tokens ({reported}); finish: {r.finish_reason}, state: {r.state}"


def main(base_url: str | None = None) -> None:
    server = None if base_url else LlamaServer.start()
    if server is not None:
        base_url = server.base_url
    try:
        with Client(base_url=base_url, model="SmolLM2-135M-Instruct") as client:
            show_decisions(client)

            print("\n== 2. A streamed answer ==\n")
            with client.stream(
                "Explain entropy in three sentences.", consumer="human", max_tokens=120
            ) as stream:
                for text in stream.text():
                    print(text, end="", flush=True)
            streamed = stream.final()
            print("\n\n" + timing_line(streamed))

            print("\n== 3. An atomic JSON answer, checked against a schema ==\n")
            extracted = client.complete(
                "Extract the person: 'Maria Lopez, 34, lives in Seville.' Reply in JSON.",
                schema=SCHEMA,
                consumer="machine",
                max_tokens=80,
                temperature=0,
            )
            print(f"parsed: {extracted.parsed!r}")
            print(f"took {extracted.metrics.total_seconds * 1000:.0f} ms, one body")

            print("\n== 4. Usage ==\n")
            print(usage_line("streamed", streamed))
            print(usage_line("atomic", extracted))
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
