"""The router as a product: priced decisions, cost per call, feedback, and the hosted router.

Runs without a network: the hosted Tally router is the loopback stand-in from
tally_client.testing (a real learner behind it), and both "models" are served by the local
OpenAI-compatible server ($TALLY_LOCAL_BASE_URL, default http://127.0.0.1:8080/v1), priced as
the catalog prices gpt-4.1-nano and gpt-4.1.
"""

import os

from tally_client import Client, ModelSpec
from tally_client._config import load_provider
from tally_client.testing import TallyServer

base_url = os.environ.get("TALLY_LOCAL_BASE_URL", "http://127.0.0.1:8080/v1")
local = load_provider("openai-chat", base_url=base_url, name="local")
models = [ModelSpec("gpt-4.1-nano", "local"), ModelSpec("gpt-4.1", "local")]

# 1. The embedded router: a decision with its confidence and reasons, a cost per call.
with Client(models, providers={"local": local}) as client:
    d = client.route(task_type="qa-simple", consumer="machine", expected_output_tokens=50)
    print(f"embedded: {d.model}, stream={d.stream}, confidence={d.confidence}")
    print("  " + "\n  ".join(d.reasons))
    r = client.complete("Name the capital of France.", task_type="qa-simple", max_tokens=20)
    cost = "unknown" if r.cost is None else f"${r.cost:.8f}"
    print(f"answer from {r.model}: {r.text.strip()[:60]!r}  cost: {cost}")
    client.feedback(r, score=1.0)  # the caller's verdict, learned from

# 2. The hosted router (here its loopback stand-in): TALLY_API_KEY and TALLY_BASE_URL.
with TallyServer(api_key="tly_example") as tally:
    os.environ["TALLY_API_KEY"] = "tly_example"
    os.environ["TALLY_BASE_URL"] = tally.url
    with Client(models, providers={"local": local}, router="tally") as client:
        d = client.route(task_type="summarisation", consumer="human")
        print(f"hosted: {d.model} (source: {d.source}, exploring: {d.exploration})")
        r = client.complete("Summarise: the sky is blue.", task_type="summarisation", max_tokens=30)
        print(f"answer: {r.text.strip()[:60]!r}")
    # close() flushed the telemetry: the stand-in learned from the outcome.
    print(f"telemetry received: {len(tally.bodies('/telemetry'))}")
    tally.fault = "500"
    with Client(models, providers={"local": local}, router="tally") as client:
        d = client.route(task_type="summarisation", consumer="human")
        print(f"when the hosted router fails: source {d.source}: {d.reasons[0]}")
