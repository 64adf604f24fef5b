"""Behind a real nginx with its default proxy buffering: the relay still streams.

nginx buffers a proxied response unless it says `X-Accel-Buffering: no` (or the site sets
`proxy_buffering off`). The relay sends that header; a control response with the same frames
but plain StreamingResponse headers arrives in one burst at the end. Times are taken in the
browser (Chromium's fetch reader), and TTFT through nginx is compared with the direct one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from tally_client import AsyncClient, TextDelta
from tally_client.testing import ReplayServer, Reply, Scenario
from tally_client.web import sse_response

from .servers import nginx, serve

RECORDINGS = Path(__file__).parent.parent / "recordings"
ROUNDS = 3

# Fetch a URL and time, in ms from the request, the first text frame and the end of the body.
MEASURE = """async (url) => {
  const t0 = performance.now();
  const response = await fetch(url, { method: 'POST', body: '{}' });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let seen = '', firstText = null, reads = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    reads += 1;
    seen += decoder.decode(value, { stream: true });
    if (firstText === null && seen.includes('event: text')) firstText = performance.now() - t0;
  }
  return { firstText, end: performance.now() - t0, reads,
           buffering: response.headers.get('x-accel-buffering') };
}"""


def make_app(url: str) -> Starlette:
    holder: dict[str, AsyncClient] = {}

    def stream() -> Any:
        if "client" not in holder:
            holder["client"] = AsyncClient(base_url=url + "/v1")
        return holder["client"].stream("hi")

    async def page(request: Request) -> Response:
        return HTMLResponse("<!doctype html><title>measure</title>")

    async def relay(request: Request) -> Response:
        return sse_response(stream(), protocol="events")

    async def control(request: Request) -> Response:
        async def frames() -> Any:
            async for event in stream():
                if isinstance(event, TextDelta):
                    yield f"event: text\ndata: {json.dumps({'text': event.text})}\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    return Starlette(
        routes=[
            Route("/", page),
            Route("/relay", relay, methods=["POST"]),
            Route("/control", control, methods=["POST"]),
        ]
    )


def test_through_nginx_the_relay_streams_and_the_control_arrives_in_one_burst(
    page: Any, artifacts: Path
) -> None:
    paced = Reply.from_file(RECORDINGS / "openai_chat" / "text.sse", chunk_delay=0.1)
    with ReplayServer() as server:
        app = make_app(server.add(Scenario(paced)))
        with serve(app) as direct, nginx(direct) as proxied:
            samples: dict[str, list[dict[str, Any]]] = {}
            for round_ in range(ROUNDS + 1):  # alternate, so machine load hits both paths alike
                for name, base in (("direct", direct), ("nginx", proxied)):
                    page.goto(base + "/")  # fetch from the same origin
                    if round_ == 0:  # warm-up: connections, first imports
                        page.evaluate(MEASURE, f"{base}/relay")
                        continue
                    for route in ("relay", "control"):
                        measured = page.evaluate(MEASURE, f"{base}/{route}")
                        samples.setdefault(f"{route} {name}", []).append(measured)
    # Per path: the sample with the median TTFT.
    timings = {k: sorted(v, key=lambda t: t["firstText"])[len(v) // 2] for k, v in samples.items()}
    (artifacts / "nginx_ttft.json").write_text(json.dumps(samples, indent=2))
    for key, t in timings.items():
        print(
            f"{key:15} first text {t['firstText']:7.1f} ms"
            f"  end {t['end']:7.1f} ms  reads {t['reads']}"
        )

    relay = timings["relay nginx"]
    assert timings["relay direct"]["buffering"] == "no"  # nginx consumes the header itself
    assert relay["end"] > 900  # ten deltas 100 ms apart
    assert relay["firstText"] < 0.35 * relay["end"]  # the first words long before the end
    assert relay["reads"] >= 8
    control = timings["control nginx"]
    assert control["firstText"] > 0.9 * control["end"]  # nginx held it back: one burst
    assert control["reads"] <= 2
    control_direct = timings["control direct"]
    # Without nginx the control streams too: nginx is what held it back.
    assert control_direct["firstText"] < 0.35 * control_direct["end"]
    # TTFT through nginx stays close to direct (loopback, medians): within 300 ms.
    assert relay["firstText"] - timings["relay direct"]["firstText"] < 300
