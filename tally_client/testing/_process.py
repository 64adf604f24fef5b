"""Stopping a server process the tests started: shared by the local servers in `testing/`."""

from __future__ import annotations

import subprocess

__all__ = ["stop_process"]


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Terminate `process`, then kill it if it is still running after `grace` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
