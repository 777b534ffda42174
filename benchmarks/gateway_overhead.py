"""Latency and throughput the Trunkline gateway adds over a zero-latency upstream, beside its peers.

Every server runs on 127.0.0.1 against the same fake OpenAI upstream
(`fake_upstream.py`), and wrk (one thread) sends the same chat completion to
each of them:

- ``direct``: straight to the fake upstream, the floor;
- ``trunkline-1w``: `trunkline serve` with one worker process;
- ``trunkline-Nw``: the same with one worker per core (``--workers``);
- ``litellm``: LiteLLM's proxy, one worker, where it is installed;
- ``portkey``: Portkey's Node gateway, where it is installed.

Each Trunkline gateway gets a fresh SQLite store, one developer key and a
route with retries, a circuit breaker and rate limits (set too high to
bind), so every request runs the whole call path and is recorded.
`gateway_processes.py` lists where the peers are looked up.

Each round runs every concurrency, and at each one every variant once, in an
order that starts with a different variant each round. The tables give the
medians over rounds: requests per second, latency percentiles, the p50
added to the direct one, throughput against each peer, and the gateway's
CPU time per request (its process tree's CPU time over the requests wrk
counted). The run fails when a Trunkline gateway answers more than 1% of
requests with an error, or records fewer calls than it answered.

    python benchmarks/gateway_overhead.py --rounds 3 --duration 6
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from gateway_processes import (
    MODEL,
    Server,
    litellm_binary,
    portkey_script,
    start_litellm,
    start_portkey,
    start_trunkline,
    start_upstream,
)

#: Seconds one wrk run may last, the longest the benchmark allows.
MAX_DURATION_S = 60
#: Error share above which a gateway's figures are not trusted.
MAX_ERROR_SHARE = 0.01

# wrk script: the body and headers come from the environment; `request`
# stops the thread at the request cap, and `done` prints one JSON line.
WRK_SCRIPT = r"""
local limit = tonumber(os.getenv("BENCH_MAX_REQUESTS") or "0")
local count = 0
local prepared = nil

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
    local name, value = string.match(line, "^([^:]+):%s*(.*)$")
    if name then headers[name] = value end
  end
  prepared = wrk.format("POST", nil, headers, os.getenv("BENCH_BODY"))
end

function request()
  count = count + 1
  if limit > 0 and count >= limit then wrk.thread:stop() end
  return prepared
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p95_us":%d,"p99_us":%d,' ..
    '"errors_connect":%d,"errors_read":%d,"errors_write":%d,"errors_status":%d,' ..
    '"errors_timeout":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(95),
    latency:percentile(99), errors.connect, errors.read, errors.write, errors.status,
    errors.timeout))
end
"""


@dataclass
class Run:
    """One wrk run against one variant."""

    variant: str
    concurrency: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_us_per_request: float
    capped: bool


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_wrk(
    server: Server,
    concurrency: int,
    duration_s: int,
    *,
    script: Path,
    body: str,
    max_requests: int,
) -> Run:
    """Run wrk against `server` for `duration_s` seconds or `max_requests` requests."""
    env = os.environ.copy() | {
        "BENCH_BODY": body,
        "BENCH_HEADERS": "\n".join(f"{name}: {value}" for name, value in server.headers.items()),
        "BENCH_MAX_REQUESTS": str(max_requests),
    }
    command = [
        "wrk",
        "-t1",
        f"-c{concurrency}",
        f"-d{duration_s}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        server.url,
    ]

    cpu_before = server.cpu_seconds()
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    cpu = server.cpu_seconds() - cpu_before

    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed on {server.name}: {completed.stdout}{completed.stderr}")
    figures = json.loads(lines[-1])
    requests = figures["requests"]
    errors = sum(value for name, value in figures.items() if name.startswith("errors_"))
    return Run(
        variant=server.name,
        concurrency=concurrency,
        requests=requests,
        errors=errors,
        rps=requests / (figures["duration_us"] / 1e6),
        p50_ms=figures["p50_us"] / 1000,
        p95_ms=figures["p95_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        cpu_us_per_request=cpu / max(requests, 1) * 1e6,
        capped=requests >= max_requests,
    )


def rotated(items: list[Server], number: int) -> list[Server]:
    start = number % len(items)
    return items[start:] + items[:start]


def start_servers(arguments: argparse.Namespace, folder: Path) -> list[Server]:
    """Start the upstream, the Trunkline gateways and the installed peers; direct comes first."""
    limit = arguments.max_seconds + 120
    upstream = start_upstream(folder, limit)
    base = upstream.url.removesuffix("/v1/chat/completions")
    servers = [upstream]
    for workers in dict.fromkeys([1, arguments.workers]):
        servers.append(start_trunkline(folder, base, workers, limit))
    if arguments.skip_peers:
        return servers
    peers = Path(arguments.peers_dir)
    for name, found, start in (
        ("litellm", litellm_binary(peers), start_litellm),
        ("portkey", portkey_script(peers), start_portkey),
    ):
        if found is None:
            print(f"{name} is not installed under {peers}; its rows are left out", file=sys.stderr)
            continue
        servers.append(start(folder, peers, base, limit))
    return servers


def count_records(store: Path) -> int:
    with sqlite3.connect(store) as connection:
        return connection.execute("SELECT count(*) FROM calls").fetchone()[0]


def main() -> None:
    arguments = parse_arguments()
    folder = Path(tempfile.mkdtemp(prefix="trunkline-gateway-bench-"))
    script = folder / "chat.lua"
    script.write_text(WRK_SCRIPT)
    request = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
    if arguments.stream:
        request["stream"] = True
    body = json.dumps(request)
    wrk_options = {"script": script, "body": body, "max_requests": arguments.max_requests}
    deadline = time.monotonic() + arguments.max_seconds
    print(f"load average (1, 5, 15 min) at start: {load_average()}; logs in {folder}", flush=True)

    servers = start_servers(arguments, folder)
    answered: dict[str, int] = {server.name: 0 for server in servers}
    runs: list[Run] = []
    try:
        for server in list(servers):
            warm = run_wrk(server, 16, arguments.warmup, **wrk_options)
            answered[server.name] += warm.requests - warm.errors
            print(f"warm-up {server.name}: {warm.rps:,.0f} req/s, {warm.errors} errors", flush=True)
            if within_error_share([warm]):
                continue
            if server.name in ("litellm", "portkey"):
                print(f"{server.name} failed over 1% of its warm-up requests; its rows are left out")
                servers.remove(server)
                server.stop()
                continue
            raise RuntimeError(f"{server.name} failed over 1% of its warm-up requests; see the logs in {folder}")
        for number in range(arguments.rounds):
            print(f"round {number + 1}: load average {load_average()}", flush=True)
            for concurrency in arguments.concurrency:
                for server in rotated(servers, number):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"--max-seconds {arguments.max_seconds} reached")
                    run = run_wrk(server, concurrency, arguments.duration, **wrk_options)
                    runs.append(run)
                    answered[server.name] += run.requests - run.errors
                    print(
                        f"  c={concurrency:<3} {server.name:<13} {run.rps:9,.0f} req/s  "
                        f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
                        f"cpu {run.cpu_us_per_request:6.0f} us/req  errors {run.errors}",
                        flush=True,
                    )
    finally:
        for server in servers:
            server.stop()
    print(f"load average at the end: {load_average()}")

    report(runs, arguments)
    sys.exit(0 if checks_pass(servers, runs, answered) else 1)


def checks_pass(servers: list[Server], runs: list[Run], answered: dict[str, int]) -> bool:
    """Print whether each Trunkline gateway kept its errors under 1% and recorded every call."""
    passed = True
    print("\nchecks")
    for server in (server for server in servers if server.store is not None):
        own = [run for run in runs if run.variant == server.name]
        requests, errors = sum(run.requests for run in own), sum(run.errors for run in own)
        healthy = within_error_share(own)
        print(f"  {server.name}: {errors:,} errors in {requests:,} requests: {verdict(healthy)}")
        recorded = count_records(server.store)
        complete = recorded >= answered[server.name]
        print(
            f"  {server.name}: {recorded:,} calls recorded for {answered[server.name]:,} "
            f"answered requests: {verdict(complete)}"
        )
        passed = passed and healthy and complete
    return passed


def within_error_share(runs: list[Run]) -> bool:
    requests = sum(run.requests for run in runs)
    errors = sum(run.errors for run in runs)
    return requests > 0 and errors <= requests * MAX_ERROR_SHARE


@dataclass
class Row:
    """The medians of one variant's runs at one concurrency."""

    variant: str
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int
    capped: bool


def medians(runs: list[Run], variant: str, concurrency: int) -> Row | None:
    chosen = [run for run in runs if run.variant == variant and run.concurrency == concurrency]
    if not chosen:
        return None
    return Row(
        variant=variant,
        rps=statistics.median(run.rps for run in chosen),
        p50_ms=statistics.median(run.p50_ms for run in chosen),
        p95_ms=statistics.median(run.p95_ms for run in chosen),
        p99_ms=statistics.median(run.p99_ms for run in chosen),
        cpu_us_per_request=statistics.median(run.cpu_us_per_request for run in chosen),
        errors=sum(run.errors for run in chosen),
        capped=any(run.capped for run in chosen),
    )


def report(runs: list[Run], arguments: argparse.Namespace) -> None:
    """Print the tables of medians and the targets."""
    variants = list(dict.fromkeys(run.variant for run in runs))
    rows = {
        (variant, concurrency): row
        for variant in variants
        for concurrency in arguments.concurrency
        if (row := medians(runs, variant, concurrency)) is not None
    }
    mode = "streamed" if arguments.stream else "non-streamed"
    print(
        f"\n{mode} chat completions, medians of {arguments.rounds} rounds of "
        f"{arguments.duration} s per variant and concurrency, wrk -t1"
    )
    for concurrency in arguments.concurrency:
        print(f"\nconcurrency {concurrency}")
        print(
            f"{'variant':<14}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
            f"{'added p50 ms':>14}{'vs portkey':>12}{'vs litellm':>12}{'cpu us/req':>12}"
        )
        direct = rows.get(("direct", concurrency))
        for variant in variants:
            row = rows.get((variant, concurrency))
            if row is None:
                continue
            added, portkey, litellm, cpu = "-", "-", "-", "-"
            if variant != "direct":
                added = f"{row.p50_ms - direct.p50_ms:+.3f}" if direct else "-"
                portkey = ratio(row, rows.get(("portkey", concurrency)))
                litellm = ratio(row, rows.get(("litellm", concurrency)))
                cpu = f"{row.cpu_us_per_request:.0f}"
            notes = ""
            if row.errors:
                notes += f" (errors {row.errors})"
            if row.capped:
                notes += " (capped)"
            print(
                f"{variant:<14}{row.rps:9,.0f}{row.p50_ms:9.2f}{row.p95_ms:9.2f}{row.p99_ms:9.2f}"
                f"{added:>14}{portkey:>12}{litellm:>12}{cpu:>12}{notes}"
            )
    print_targets(rows, variants, arguments.concurrency)


def ratio(row: Row, peer: Row | None) -> str:
    return f"{row.rps / peer.rps:.2f}x" if peer is not None and peer.rps else "-"


def print_targets(rows: dict[tuple[str, int], Row], variants: list[str], levels: list[int]) -> None:
    """Print PASS or FAIL for each target and each Trunkline variant."""
    print("\ntargets")
    peers = [name for name in ("portkey", "litellm") if name in variants]
    for variant in (name for name in variants if name.startswith("trunkline")):
        row, direct = rows.get((variant, 1)), rows.get(("direct", 1))
        if row is not None and direct is not None:
            added = row.p50_ms - direct.p50_ms
            print(f"  {variant}: p50 added at concurrency 1 is {added:.3f} ms, target under 0.5 ms: {verdict(added < 0.5)}")
        for concurrency in (level for level in (32, 64) if level in levels):
            own = rows.get((variant, concurrency))
            others = [rows[(peer, concurrency)] for peer in peers if (peer, concurrency) in rows]
            if own is None or not others:
                print(f"  {variant}: p50 at concurrency {concurrency}: no peer measured")
                continue
            best = min(others, key=lambda other: other.p50_ms)
            print(
                f"  {variant}: p50 at concurrency {concurrency} is {own.p50_ms:.2f} ms, lowest peer "
                f"{best.variant} {best.p50_ms:.2f} ms: {verdict(own.p50_ms < best.p50_ms)}"
            )
        top = max((rows[key] for key in rows if key[0] == variant), key=lambda item: item.rps)
        portkey = [rows[key].rps for key in rows if key[0] == "portkey"]
        if not portkey:
            print(f"  {variant}: maximum {top.rps:,.0f} req/s; Portkey not measured")
            continue
        needed = 1.2 * max(portkey)
        print(
            f"  {variant}: maximum {top.rps:,.0f} req/s, target 1.2 x Portkey's {max(portkey):,.0f} "
            f"= {needed:,.0f}: {verdict(top.rps >= needed)}"
        )


def verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=3, help="Rounds; each runs every variant at every concurrency."
    )
    parser.add_argument(
        "--duration", type=int, default=6, help=f"Seconds per wrk run, at most {MAX_DURATION_S}."
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1, 32, 64],
        help="Comma-separated open connections per run.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Worker processes of the second Trunkline gateway; the first has one.",
    )

    parser.add_argument("--skip-peers", action="store_true", help="Measure Trunkline and direct only.")
    parser.add_argument("--stream", action="store_true", help="Request streamed completions.")
    parser.add_argument("--peers-dir", default="/tmp/peers", help="Folder the peers are installed under.")
    parser.add_argument("--warmup", type=int, default=2, help="Seconds of warm-up per variant.")

    parser.add_argument(
        "--max-requests", type=int, default=3_000_000, help="Requests after which a wrk run stops early."
    )
    parser.add_argument(
        "--max-seconds", type=int, default=1800, help="Stop with an error after this many seconds in all."
    )

    arguments = parser.parse_args()
    if not 1 <= arguments.duration <= MAX_DURATION_S:
        parser.error(f"--duration must be between 1 and {MAX_DURATION_S} seconds, got {arguments.duration}")
    return arguments


if __name__ == "__main__":
    main()
