"""Running the `trunkline` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def run_trunkline(
    folder: Path, *arguments: str, timeout_s: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m trunkline`` in `folder` with no TRUNKLINE_* variable of this process.

    `env` adds variables, such as ``TRUNKLINE_LOG_LEVEL``, for this run only.
    """
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TRUNKLINE_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "trunkline", *arguments],
        cwd=folder,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def free_port() -> int:
    """Return a loopback TCP port that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_serve(folder: Path, *arguments: str, timeout_s: float = 90) -> tuple[subprocess.Popen[str], str]:
    """Start ``trunkline serve`` in `folder` on a free port; return it and its base URL once /healthz responds.

    The caller stops it with ``terminate()`` and ``wait()``.
    """
    port = free_port()
    environment = {key: value for key, value in os.environ.items() if not key.startswith("TRUNKLINE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "trunkline", "serve", "--port", str(port), *arguments],
        cwd=folder,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            httpx.get(f"{base}/healthz", timeout=2)
            return server, base
        except httpx.TransportError:
            if server.poll() is not None:
                raise AssertionError(f"trunkline serve exited: {server.stdout.read()}") from None
            if time.monotonic() >= deadline:
                server.terminate()
                raise AssertionError(f"trunkline serve did not answer within {timeout_s:.0f} s") from None
            time.sleep(0.2)
