"""`trunkline serve --workers 2`: both workers serve requests, and /metrics counts every request of both."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from integration.cli import run_trunkline, start_serve
from trunkline.server.metrics import FLUSH_INTERVAL_S

REQUESTS = 40


def _models_count(text: str) -> float:
    line = re.search(r'^trunkline_gateway_requests_total\{endpoint="models",model="-",status="200"\} (\S+)$', text, re.M)
    return float(line.group(1)) if line else 0.0


def test_metrics_add_up_every_worker(tmp_path: Path) -> None:
    created = run_trunkline(tmp_path, "keys", "create", "--role", "admin", "--json")
    assert created.returncode == 0, created.stderr
    headers = {"authorization": f"Bearer {json.loads(created.stdout)['key']}"}
    server, base = start_serve(tmp_path, "--workers", "2")
    try:
        # Requests on many connections at once, so that both workers take some.
        def ask(_: int) -> int:
            return httpx.get(f"{base}/v1/models", headers=headers, timeout=10).status_code

        with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
            assert list(pool.map(ask, range(REQUESTS))) == [200] * REQUESTS

        # Each worker adds its counts to the shared files every FLUSH_INTERVAL_S, and
        # the worker that serves a scrape adds its own first. So after a few
        # intervals, every scrape counts every request, whichever worker serves it.
        time.sleep(6 * FLUSH_INTERVAL_S)
        for _ in range(4):
            assert _models_count(httpx.get(f"{base}/metrics", headers=headers, timeout=10).text) == REQUESTS
    finally:
        server.terminate()
        server.wait(timeout=30)
