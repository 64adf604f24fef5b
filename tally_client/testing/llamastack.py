"""A real OpenAI Batch API on this machine: Llama Stack, its inference on our llama-server.

Llama Stack (PyPI `llama-stack`) implements `/v1/files` and `/v1/batches` with its built-in
`inline::reference` batches provider: a background task runs every line of a batch through
its inference API, here `remote::openai` pointed at a llama-server, and writes the output and
error files. It needs Python >= 3.12 and pins its own dependencies, so it lives in a venv of
its own under `$TALLY_CACHE_DIR/llamastack-<version>` (`provision()` builds it once).

    python -m tally_client.testing.llamastack provision   # the venv, once
    with LlamaServer.start() as llama, LlamaStackServer.start(llama.base_url) as stack:
        client = Client(base_url=stack.base_url, model=stack.model)
        job = client.batch(["Say hi."], max_tokens=8)

Facts it rests on (shared reference, next-features section 4): `completion_window` must be
"24h"; endpoints `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`; a line's model
must be registered (here `llama-server/smollm2`); output lines carry `response.body` as a
JSON string rather than an object.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

from ._process import stop_process
from .llama import cache_dir

__all__ = ["LlamaStackError", "LlamaStackServer", "provision"]

LLAMA_STACK_VERSION = "0.7.3"
REQUIREMENTS = (f"llama-stack=={LLAMA_STACK_VERSION}", "mcp<2")
"""mcp 2 renamed `McpError`, which llama-stack 0.7.3 imports at start-up."""
MODEL = "llama-server/smollm2"
"""The model id lines must name: Llama Stack's provider id, then the registered model."""

_CONFIG = """\
version: 2
distro_name: tally-batches
apis: [batches, files, inference, models]
providers:
  inference:
  - provider_id: llama-server
    provider_type: remote::openai
    config: {{api_key: none, base_url: "{inference_url}"}}
  files:
  - provider_id: localfs
    provider_type: inline::localfs
    config:
      storage_dir: {state}/files
      metadata_store: {{table_name: files_metadata, backend: sql_default}}
  batches:
  - provider_id: reference
    provider_type: inline::reference
    config:
      kvstore: {{namespace: batches, backend: kv_default}}
      max_concurrent_requests_per_batch: {concurrency}
storage:
  backends:
    kv_default: {{type: kv_sqlite, db_path: {state}/kvstore.db}}
    sql_default: {{type: sql_sqlite, db_path: {state}/sql_store.db}}
  stores:
    metadata: {{namespace: registry, backend: kv_default}}
    inference: {{table_name: inference_store, backend: sql_default}}
    conversations: {{table_name: openai_conversations, backend: sql_default}}
    prompts: {{namespace: prompts, backend: kv_default}}
    connectors: {{namespace: connectors, backend: kv_default}}
registered_resources:
  models:
  - {{model_id: smollm2, provider_id: llama-server, provider_model_id: smollm2, model_type: llm}}
server:
  port: {port}
"""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaStackError(RuntimeError):
    """Llama Stack could not be provisioned or started; the message says what failed."""


def _python312() -> str:
    """A Python >= 3.12 interpreter: $TALLY_PYTHON312, one of pyenv's, or one on PATH."""
    candidates = [os.environ.get("TALLY_PYTHON312", "")]
    if sys.version_info >= (3, 12):
        candidates.append(sys.executable)
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    candidates += sorted(glob.glob(f"{pyenv}/versions/3.1[2-9]*/bin/python3"), reverse=True)
    candidates += [shutil.which(n) or "" for n in ("python3.13", "python3.12")]
    check = "import sys; sys.exit(sys.version_info < (3, 12))"
    for path in candidates:
        # A pyenv shim exists on PATH even when it cannot run that version: try each one.
        if (
            path
            and os.access(path, os.X_OK)
            and subprocess.run([path, "-c", check], capture_output=True, check=False).returncode
            == 0
        ):
            return path
    raise LlamaStackError(
        "Llama Stack needs Python >= 3.12 and none was found: install python3.12 "
        "(or set TALLY_PYTHON312 to an interpreter)"
    )


def venv_dir() -> Path:
    """Where Llama Stack's own venv lives."""
    return cache_dir() / f"llamastack-{LLAMA_STACK_VERSION}"


def provision(*, log: bool = True) -> Path:
    """Create Llama Stack's venv once; returns its `llama` command.

    Raises:
        LlamaStackError: no Python >= 3.12, or pip failed (the message has its output).
    """
    venv = venv_dir()
    llama = venv / "bin" / "llama"
    marker = venv / ".installed"
    if marker.exists() and llama.exists():
        return llama
    if log:
        print(f"installing Llama Stack {LLAMA_STACK_VERSION} into {venv} (once)", flush=True)
    python = _python312()
    steps = [
        [python, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *REQUIREMENTS],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise LlamaStackError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    marker.write_text(" ".join(REQUIREMENTS) + "\n")
    return llama


@dataclass
class LlamaStackServer:
    """A running Llama Stack with files + batches on 127.0.0.1. Stop it with `stop()`.

    Attributes:
        port: the TCP port.
        process: the server process.
        state: its state directory (files, SQLite stores), removed by `stop()`.
        model: the model id batch lines must name.
    """

    port: int
    process: subprocess.Popen[bytes]
    state: tempfile.TemporaryDirectory[str]
    model: str = MODEL
    _log: object = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, "http://127.0.0.1:PORT/v1"."""
        return f"http://127.0.0.1:{self.port}/v1"

    @classmethod
    def start(
        cls,
        inference_base_url: str,
        *,
        port: int | None = None,
        concurrency: int = 4,
        timeout: float = 120.0,
    ) -> LlamaStackServer:
        """Provision if needed, start Llama Stack, and wait until it lists the model.

        Args:
            inference_base_url: the OpenAI-compatible server that runs each line, e.g. a
                `LlamaServer.base_url`.
            port: the port; a free one by default.
            concurrency: requests of one batch run at once (`max_concurrent_requests_per_batch`).
            timeout: seconds to wait for it to serve.

        Raises:
            LlamaStackError: provisioning failed, or the server exited or never served (the
                message has the end of its log).
        """
        llama = provision()
        port = port or free_port()
        state = tempfile.TemporaryDirectory(prefix="tally-llamastack-")
        config = Path(state.name) / "config.yaml"
        config.write_text(
            _CONFIG.format(
                inference_url=inference_base_url,
                state=state.name,
                port=port,
                concurrency=concurrency,
            )
        )
        log = tempfile.TemporaryFile()  # noqa: SIM115 - the server writes to it while it runs
        env = {**os.environ, "LLAMA_STACK_LOGGING": "all=warning"}
        cmd = [str(llama), "stack", "run", str(config), "--port", str(port)]
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = cls(port, process, state, _log=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                models = httpx.get(f"{server.base_url}/models", timeout=2.0).json()
                if any(m.get("id") == MODEL for m in models.get("data", [])):
                    return server
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            time.sleep(0.5)
        server.stop()
        log.seek(0)
        tail = log.read()[-3000:].decode("utf-8", "replace")
        raise LlamaStackError(f"Llama Stack did not serve on port {port}:\n{tail}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s) and remove its state."""
        stop_process(self.process)
        self.state.cleanup()

    def __enter__(self) -> LlamaStackServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`provision` creates the venv and prints its `llama` command."""
    args = sys.argv[1:] if argv is None else argv
    if args != ["provision"]:
        print("usage: python -m tally_client.testing.llamastack provision")
        return 2
    print(f"LLAMA={provision()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
