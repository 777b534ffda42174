"""Start and stop the servers that `gateway_overhead.py` measures, all on 127.0.0.1.

Each server runs in its own process group under coreutils `timeout`, so it
stops by itself even when the benchmark is killed. The peers are looked up
under one folder (``/tmp/peers`` by default):

- LiteLLM's proxy: ``<peers>/venv-litellm/bin/litellm`` (``pip install
  'litellm[proxy]'`` into that virtual environment);
- Portkey's gateway: ``<peers>/portkey/node_modules/@portkey-ai/gateway``
  (``npm install @portkey-ai/gateway`` in ``<peers>/portkey``), run by ``node``.

Both are started with the settings that keep them offline: LiteLLM reads its
bundled price map and sends no telemetry, and every remote URL it could
fetch points at a closed loopback port.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: The model name every variant is asked for; each gateway maps it to the fake upstream.
MODEL = "mock-model"
UPSTREAM_KEY = "sk-bench-upstream"
#: A loopback port nothing listens on, for URLs that must never be fetched.
CLOSED_URL = "http://127.0.0.1:9"


@dataclass
class Server:
    """A started server: its process, where to send requests, and with which headers."""

    name: str
    process: subprocess.Popen | None
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    #: The SQLite file the gateway records calls in; None for servers that record nothing.
    store: Path | None = None

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server's process and its descendants."""
        if self.process is None:
            return 0.0
        return sum(_cpu_seconds(pid) for pid in _process_tree(self.process.pid))

    def stop(self) -> None:
        """Stop the process group this module started for the server, and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_upstream(folder: Path, max_seconds: float) -> Server:
    port = free_port()
    command = [
        sys.executable,
        str(HERE / "fake_upstream.py"),
        "--port",
        str(port),
        "--max-seconds",
        str(max_seconds),
    ]
    url = f"http://127.0.0.1:{port}"
    process = _spawn("upstream", command, folder, os.environ.copy(), max_seconds)
    _wait_for_port(process, port, "the fake upstream", folder / "upstream.log")
    return Server("direct", process, f"{url}/v1/chat/completions")


def start_trunkline(
    folder: Path, upstream: str, workers: int, max_seconds: float
) -> Server:
    """Start `trunkline serve` on a fresh SQLite store with one developer key."""
    from trunkline.store.database import open_store
    from trunkline.store.keys import Role, create_key

    name = f"trunkline-{workers}w"
    home = folder / name
    home.mkdir()
    store = home / "store.db"
    (home / "trunkline.toml").write_text(_trunkline_config(upstream))
    opened = open_store(f"sqlite:///{store}")
    secret = create_key(opened, Role.DEVELOPER, name="bench", actor="bench").secret
    opened.dispose()
    port = free_port()
    env = os.environ.copy() | {
        "TRUNKLINE_CONFIG": str(home / "trunkline.toml"),
        "TRUNKLINE_DATABASE_URL": f"sqlite:///{store}",
        "TRUNKLINE_BENCH_UPSTREAM_KEY": UPSTREAM_KEY,
    }
    command = [
        sys.executable,
        "-m",
        "trunkline",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    process = _spawn(name, command, home, env, max_seconds)
    base = f"http://127.0.0.1:{port}"
    _wait_for_health(process, f"{base}/healthz", name, home / f"{name}.log")
    return Server(
        name,
        process,
        f"{base}/v1/chat/completions",
        {"Authorization": f"Bearer {secret}"},
        store=store,
    )


def _trunkline_config(upstream: str) -> str:
    # The limits are far above what the benchmark sends, so the limiter's
    # bookkeeping runs on every call without ever making one wait.
    return f"""
[deployments.mock]
provider = "openai"
model = "gpt-4o-mini"
base_url = "{upstream}/v1"
api_key_env = "TRUNKLINE_BENCH_UPSTREAM_KEY"
rpm = 10000000
tpm = 10000000000
max_concurrent = 1000

[routes.{MODEL}]
deployments = ["mock"]
max_attempts = 3
"""


def litellm_binary(peers: Path) -> Path | None:
    binary = peers / "venv-litellm" / "bin" / "litellm"
    return binary if binary.is_file() else None


def portkey_script(peers: Path) -> Path | None:
    script = peers / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    return script if script.is_file() and shutil.which("node") else None


def start_litellm(folder: Path, peers: Path, upstream: str, max_seconds: float) -> Server:
    """Start LiteLLM's proxy with one worker, routing `MODEL` to the fake upstream."""
    binary = litellm_binary(peers)
    assert binary is not None
    home = folder / "litellm"
    home.mkdir()
    config = home / "config.yaml"
    # A model name that LiteLLM has a price for, as a real deployment has; the
    # fake upstream ignores it.
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: {upstream}/v1\n"
        f"      api_key: {UPSTREAM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
    )
    master_key = "sk-" + secrets.token_hex(24)
    env = os.environ.copy() | _litellm_offline_env() | {"LITELLM_MASTER_KEY": master_key}
    port = free_port()
    command = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    process = _spawn("litellm", command, home, env, max_seconds)
    base = f"http://127.0.0.1:{port}"
    _wait_for_health(process, f"{base}/health/liveliness", "litellm", home / "litellm.log")
    return Server("litellm", process, f"{base}/v1/chat/completions", {"Authorization": f"Bearer {master_key}"})


def _litellm_offline_env() -> dict[str, str]:
    return {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOCAL_BLOG_POSTS": "True",
        "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
        "LITELLM_TELEMETRY": "False",
        "DISABLE_SCHEMA_UPDATE": "True",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
        "DISABLE_ADMIN_UI": "True",
        "LITELLM_MODEL_COST_MAP_URL": f"{CLOSED_URL}/cost.json",
        "LITELLM_BLOG_POSTS_URL": f"{CLOSED_URL}/rss.xml",
        "LITELLM_ANTHROPIC_BETA_HEADERS_URL": f"{CLOSED_URL}/beta.json",
        "LITELLM_AUTOROUTER_PRESETS_URL": f"{CLOSED_URL}/presets.json",
        "NO_PROXY": "*",
        "HTTP_PROXY": "",
        "HTTPS_PROXY": "",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


# Portkey's start script listens on every interface and has no host option;
# this module, loaded first with `node --import`, binds its listener to loopback.
_LOOPBACK_PRELOAD = """\
import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (first, ...rest) {
  if (typeof first === "number") {
    if (rest.length > 0 && (typeof rest[0] === "string" || rest[0] === undefined)) {
      rest[0] = "127.0.0.1";
    } else {
      rest.unshift("127.0.0.1");
    }
  } else if (first && typeof first === "object") {
    first = { ...first, host: "127.0.0.1" };
  }
  return listen.call(this, first, ...rest);
};
"""


def start_portkey(folder: Path, peers: Path, upstream: str, max_seconds: float) -> Server:
    """Start Portkey's gateway headless, sending each request to the fake upstream."""
    script = portkey_script(peers)
    assert script is not None
    home = folder / "portkey"
    home.mkdir()
    preload = home / "loopback.mjs"
    preload.write_text(_LOOPBACK_PRELOAD)
    port = free_port()
    env = os.environ.copy() | {"NODE_ENV": "production"}
    command = ["node", "--import", str(preload), str(script), f"--port={port}", "--headless"]
    process = _spawn("portkey", command, peers / "portkey", env, max_seconds, log_folder=home)
    base = f"http://127.0.0.1:{port}"
    _wait_for_health(process, f"{base}/", "portkey", home / "portkey.log")
    headers = {
        "Authorization": f"Bearer {UPSTREAM_KEY}",
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"{upstream}/v1",
    }
    return Server("portkey", process, f"{base}/v1/chat/completions", headers)


def _spawn(
    name: str,
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    max_seconds: float,
    *,
    log_folder: Path | None = None,
) -> subprocess.Popen:
    log = open((log_folder or cwd) / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it open
    return subprocess.Popen(
        ["timeout", str(int(max_seconds)), *command],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_for_port(process: subprocess.Popen, port: int, server_name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server_name} exited with code {process.returncode}; see {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{server_name} did not listen on port {port} within 30 s; see {log}")


def _wait_for_health(process: subprocess.Popen, url: str, server_name: str, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server_name} exited with code {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{server_name} did not respond with 200 at {url} within 120 s; see {log}")


def _process_tree(pid: int) -> list[int]:
    """Return `pid` and its descendants, read from /proc."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                pending.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue
    return found


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Fields after the command name, which may contain spaces, start after ")".
    fields = text[text.rindex(")") + 2 :].split()
    user, system = int(fields[11]), int(fields[12])
    return (user + system) / _TICKS
