"""The `tally` command line, driven through click's runner against the replay server.

Stream-vs-pipe and Ctrl-C need a real terminal: tests/test_cli_terminal.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pydantic import BaseModel

from tally_client.cli import EXIT_CODES, compact_schema, main
from tally_client.testing import ReplayServer, Reply, Scenario

RECORDINGS = Path(__file__).parent / "recordings" / "openai_chat"
TEXT = "Hello! Café au lait — a classic ☕."


class Person(BaseModel):
    """Used by --schema tests.test_cli:Person."""

    name: str
    age: int


def chat_sse(*pieces: str, finish: bool = True) -> bytes:
    """A Chat Completions stream of these text pieces (with usage and [DONE] if `finish`)."""
    events: list[dict[str, Any]] = [
        {"id": "c1", "model": "m", "choices": [{"index": 0, "delta": {"content": p}}]}
        for p in pieces
    ]
    if finish:
        done = {"index": 0, "delta": {}, "finish_reason": "stop"}
        usage = {"prompt_tokens": 5, "completion_tokens": len(pieces)}
        events.append({"id": "c1", "model": "m", "choices": [done]})
        events.append({"id": "c1", "model": "m", "choices": [], "usage": usage})
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events)
    return (body + ("data: [DONE]\n\n" if finish else "")).encode()


def chat_json(content: str) -> Reply:
    return Reply.json(
        {
            "id": "c1",
            "object": "chat.completion",
            "model": "m",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content},
                 "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        }
    )  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[ReplayServer]:
    with ReplayServer() as srv:
        yield srv


def cli_runner() -> CliRunner:
    """A runner that keeps stderr apart from stdout: click 8.2+ always does; 8.1 (the floor
    `make test-lowest` runs) needs mix_stderr=False, a parameter 8.2 removed."""
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        return CliRunner()


def tally(url: str, *args: str, input: str | None = None) -> Result:
    runner = cli_runner()
    return runner.invoke(
        main, [*args, "--base-url", url + "/v1"], input=input, catch_exceptions=False
    )


def test_piped_output_is_atomic_and_undecorated(server: ReplayServer) -> None:
    url = server.add(Reply.from_file(RECORDINGS / "text.json"))
    result = tally(url, "Say hello.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == TEXT + "\n"
    assert result.stderr == ""
    body = server.requests(url)[0].json()
    assert not body.get("stream")  # a machine reads a pipe: the router chose atomic
    assert body["max_tokens"] == 1024  # the default cap
    assert body["messages"] == [{"role": "user", "content": "Say hello."}]


def test_stream_flag_overrides_the_router(server: ReplayServer) -> None:
    url = server.add(Reply.from_file(RECORDINGS / "text.sse"))
    result = tally(url, "--stream", "Say hello.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == TEXT + "\n"
    assert server.requests(url)[0].json()["stream"] is True


def test_stdin_is_joined_with_the_prompt_and_options_reach_the_request(
    server: ReplayServer,
) -> None:
    url = server.add(chat_json("ok"))
    result = tally(
        url, "-s", "Be brief.", "--max-tokens", "40", "--temperature", "0.2",
        "-o", "top_k=5", "-o", 'stop=["\\n"]', "-o", "user=me", "Summarise this.",
        input="line one\nline two\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    body = server.requests(url)[0].json()
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "line one\nline two\n\nSummarise this."},
    ]
    assert (body["max_tokens"], body["temperature"]) == (40, 0.2)
    assert (body["top_k"], body["stop"], body["user"]) == (5, ["\n"], "me")


def test_json_prints_the_whole_response(server: ReplayServer) -> None:
    url = server.add(Reply.from_file(RECORDINGS / "text.sse"))
    result = tally(url, "--json", "--stream", "Say hello.")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["text"] == TEXT
    assert data["state"] == "complete"
    assert data["finish_reason"] == "stop"
    assert data["usage"]["reported"] is True
    assert data["usage"]["output_tokens"] > 0
    assert data["metrics"]["ttft"] is not None
    assert data["decision"]["stream"] is True
    assert data["decision"]["source"] == "caller"
    (attempt,) = data["attempts"]
    assert (attempt["number"], attempt["error"], attempt["text_chars"]) == (1, None, len(TEXT))
    assert "cost" in data


def test_verbose_explains_the_decision_and_timings_on_stderr(server: ReplayServer) -> None:
    url = server.add(Reply.from_file(RECORDINGS / "text.sse"))
    result = tally(url, "-v", "--stream", "Say hello.")
    assert result.exit_code == 0
    assert result.stdout == TEXT + "\n"  # nothing of it on stdout
    assert "the caller chose stream()" in result.stderr
    assert "TTFT" in result.stderr
    assert "attempt(s)" in result.stderr


def test_compact_schema_form() -> None:
    assert compact_schema("name, age int, bio: a short bio") == {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "bio": {"type": "string", "description": "a short bio"},
        },
        "required": ["name", "age", "bio"],
    }


@pytest.mark.parametrize(
    "schema",
    ["name, age int", "tests.test_cli:Person", "FILE"],
)
def test_schema_prints_validated_json(server: ReplayServer, schema: str, tmp_path: Path) -> None:
    if schema == "FILE":
        path = tmp_path / "person.json"
        path.write_text(json.dumps(Person.model_json_schema()))
        schema = str(path)
    url = server.add(chat_json('{"name": "Ada", "age": 36}'))
    result = tally(url, "--schema", schema, "A person.")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"name": "Ada", "age": 36}
    sent = server.requests(url)[0].json()["response_format"]["json_schema"]["schema"]
    assert sent["properties"]["age"]["type"] == "integer"


def test_schema_mismatch_exits_10(server: ReplayServer) -> None:
    url = server.add(chat_json('{"name": "Ada", "age": "old"}'))
    result = tally(url, "--schema", "name, age int", "A person.")
    assert result.exit_code == EXIT_CODES["structured_output"] == 10
    assert "does not match the schema" in result.stderr
    assert result.stdout == ""


def test_bad_schema_type_is_a_usage_error(server: ReplayServer) -> None:
    result = tally(server.base_url, "--schema", "age integer", "x")
    assert result.exit_code == 2
    assert "TYPE one of str, int, float, bool" in result.stderr


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (Reply.error(401, {"error": {"message": "bad key", "type": "invalid_request_error"}}), 4),
        (Reply.error(403, {"error": {"message": "not allowed"}}), 4),
        (Reply.error(400, {"error": {"message": "bad request"}}), 5),
        (Reply.error(429, {"error": {"message": "slow down"}}, {"retry-after-ms": "1"}), 6),
        (Reply.html_error(502), 7),
        (Reply.disconnect(reset=True), 9),
    ],
)
def test_exit_code_per_error_class(server: ReplayServer, reply: Reply, code: int) -> None:
    url = server.add(Scenario(reply, reply, reply, reply))
    result = tally(url, "x")
    assert result.exit_code == code, result.stderr
    assert result.stderr.startswith("tally: ")
    assert result.stdout == ""


def test_configuration_error_exits_3() -> None:
    result = cli_runner().invoke(main, ["--base-url", "not-a-url", "x"])
    assert result.exit_code == 3
    assert "base_url must be an http(s) URL" in result.stderr


def test_no_prompt_is_a_usage_error() -> None:
    result = cli_runner().invoke(main, [], input="")
    assert result.exit_code == 2
    assert "give a prompt" in result.stderr


def test_partial_answer_is_printed_and_exits_11(server: ReplayServer) -> None:
    cut = Reply(body=chat_sse("Once ", "upon ", "a time", finish=False))
    url = server.add(Scenario(cut, cut, cut))
    result = tally(url, "--stream", "A story.")
    assert result.exit_code == EXIT_CODES["partial"] == 11
    # each clean early end is retried; what a terminal showed stays, a notice says so
    assert result.stdout == "Once upon a time" * 3 + "\n"
    assert result.stderr.count("[connection lost (StreamInterrupted)") == 2
    assert "[partial" in result.stderr


def test_reset_is_shown_on_stderr(server: ReplayServer) -> None:
    good = Reply(body=chat_sse("Second ", "try."))
    broken = Reply(body=chat_sse("First ", "words ", "lost"), cut_after=200, cut="reset")
    url = server.add(Scenario(broken, good))
    result = tally(url, "--stream", "A story.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.endswith("Second try.\n")
    assert result.stdout.startswith("First ")  # a terminal cannot take back what it showed
    assert "[connection lost" in result.stderr
    assert "attempt 2" in result.stderr


def test_route_explains_without_calling(server: ReplayServer) -> None:
    url = server.add(chat_json("never sent"))
    result = tally(url, "route", "--consumer", "machine", "--structure", "json")
    # `route` comes first: the option order of the helper puts --base-url last
    assert result.exit_code == 0, result.stderr
    assert "atomic" in result.stdout.splitlines()[0]
    assert "JSON output" in result.stdout
    result = tally(url, "route", "--consumer", "human", "--expected-tokens", "2000", "--json")
    decision = json.loads(result.stdout)
    assert decision["stream"] is True
    assert decision["confidence"]["stream"] > 0.5
    result = tally(url, "route", "--tools", "2", "--consumer", "human")
    assert "phase tool: atomic" in result.stdout
    assert server.requests(url) == []


def test_models_lists_the_catalog(server: ReplayServer) -> None:
    result = tally(server.base_url, "models", "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["default"]
    result = cli_runner().invoke(main, ["models"], env={"ANTHROPIC_API_KEY": "k"})
    assert "claude-sonnet-4-5" in result.stdout
    assert "context_window" in result.stdout.splitlines()[0]


def test_console_script_and_module_entry_point() -> None:
    root = Path(__file__).parent.parent
    scripts = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"tally": "tally_client.__main__:main"}
    out = subprocess.run(
        [sys.executable, "-m", "tally_client", "--help"],
        cwd=root, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    for command in ("prompt", "route", "models", "local"):
        assert command in out.stdout


def test_import_tally_client_loads_no_cli_or_otel_library() -> None:
    # httpx itself imports click when it is installed (for its own `httpx` command), so the
    # check is on what tally_client adds to what its dependencies load.
    code = (
        "import sys\n"
        "import httpx, httpx_sse, anyio\n"
        "base = set(sys.modules)\n"
        "import tally_client\n"
        "added = {m.split('.')[0] if not m.startswith('tally') else m\n"
        "         for m in set(sys.modules) - base}\n"
        "heavy = {'click', 'yaspin', 'jsonschema', 'pydantic', 'opentelemetry',\n"
        "         'tally_client.cli', 'tally_client.otel', 'tally_client.__main__'}\n"
        "print(sorted(heavy & added), 'tally_client._observe' in added)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True"


def test_one_line_helpers_cap_the_output_by_default(
    server: ReplayServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import tally_client
    from tally_client import Client

    url = server.add(Scenario(chat_json("Paris"), Reply(body=chat_sse("Once."))))
    with Client(base_url=url + "/v1") as client:
        monkeypatch.setattr(tally_client, "_default_client", client)
        assert tally_client.ask("Capital of France?") == "Paris"
        assert tally_client.ask_stream("A story.", file=io.StringIO()).text == "Once."
    caps = [r.json()["max_tokens"] for r in server.requests(url)]
    assert caps == [tally_client.DEFAULT_MAX_TOKENS] * 2 == [1024, 1024]


def test_without_the_cli_extra_the_command_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['click'] = None  # as if click were not installed\n"
        "from tally_client.__main__ import main\n"
        "main()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert out.returncode == 3
    assert "pip install 'tally-client[cli]'" in out.stderr


def test_no_stream_answers_atomically(server: ReplayServer) -> None:
    # into a pipe the router already chose atomic; in a terminal the flag overrides it
    # (tests/test_cli_terminal.py)
    url = server.add(Reply.from_file(RECORDINGS / "text.json"))
    result = tally(url, "--no-stream", "-v", "Say hello.")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == TEXT + "\n"
    assert "default, atomic;" in result.stderr
    assert not server.requests(url)[0].json().get("stream")
