"""Fixtures for integration tests: a real redis-server on 127.0.0.1."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

REDIS_START_TIMEOUT_S = 10.0


def _free_port() -> int:
    """Return a port that was free a moment ago. Another process may take it before it is used."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_ping(port: int, server: subprocess.Popen[bytes], log_path: Path) -> None:
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with status {server.returncode} before answering "
                    f"PING on port {port}; its log:\n{log_path.read_text(errors='replace')}"
                )
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(
        f"redis-server did not answer PING on port {port} within {REDIS_START_TIMEOUT_S:.0f} s; "
        f"its log:\n{log_path.read_text(errors='replace')}"
    )


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """Start a throwaway redis-server on 127.0.0.1 for the session and return its URL.

    It keeps nothing on disk. Tests skip, with the reason in the ``-rs``
    summary, where the ``redis-server`` binary is not installed.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(
            "redis-server is not installed, so the tests of limits and budgets shared "
            "through Redis cannot run; install it (apt-get install redis-server)"
        )
    with tempfile.TemporaryDirectory(prefix="trunkline-redis-") as folder:
        port = _free_port()
        log_path = Path(folder) / "redis.log"
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", folder,
            "--logfile", str(log_path),
        ]  # fmt: skip
        server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
        try:
            _wait_for_ping(port, server, log_path)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=5)


@pytest.fixture
def key_prefix() -> str:
    """Return a key prefix of its own for each test, so tests share no Redis state."""
    return f"test:{uuid.uuid4().hex[:12]}:"
