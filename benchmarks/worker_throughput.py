"""Rows per second of `trunkline run` on Celery workers, beside the same run in one asyncio process.

A one-step workflow (one model call per row) runs over `--rows` rows
against the simulated provider: a log-normal latency with a median of
`--latency-ms`, no failures. Every variant writes to one throwaway
PostgreSQL cluster on 127.0.0.1 (started as `tests/pgserver.py` starts it
for the tests), a fresh database each, and the Celery variants use a
throwaway redis-server on 127.0.0.1 as broker and shared limits.

- ``asyncio``: ``trunkline run --concurrency C`` in one process;
- ``celery xN``: N ``trunkline worker --concurrency T`` processes, started
  and answering before the clock starts, then ``trunkline run --workers
  celery --chunk-size K``: each worker has T tasks of K rows in flight. The time runs from the command's start to its summary, so it
  includes sending the rows and following them in the store.

Every process shares the machine's cores, the database server and Redis
included. The table gives rows per second and the ratio to the asyncio run.

    python benchmarks/worker_throughput.py [--rows 10000] [--workers 1,2,4] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_ingest import start_postgres  # noqa: E402

CONFIG = """
default_route = "simulated"

[deployments.simulated]
provider = "fake"
model = "simulated-model"
options = {{ mode = "simulated", latency_ms = {latency_ms}, latency_sigma = 0.3, text = "yes", output_tokens = 1 }}

[prices.simulated-model]
input_per_mtok = 0.15
output_per_mtok = 0.60

[workers]
queue = "bench"
"""

WORKFLOW = """
name = "answer"
data = "rows.csv"
output = "label"
expected = "gold"

[inputs]
question = "text"

[[steps]]
name = "ask"
kind = "model"
prompt = "prompt.jinja"
output = "label"
"""


def write_project(folder: Path, rows: int, latency_ms: float) -> None:
    (folder / "trunkline.toml").write_text(CONFIG.format(latency_ms=latency_ms))
    flow = folder / "flow"
    flow.mkdir()
    (flow / "workflow.toml").write_text(WORKFLOW)
    (flow / "prompt.jinja").write_text("Answer yes or no: {{ question }}")
    (flow / "rows.csv").write_text("text,gold\n" + "".join(f"is {n} a number,yes\n" for n in range(rows)))


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("the Celery variants need redis-server; install it (apt-get install redis-server)")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from integration.cli import free_port

    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=folder,
        stdout=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    client.close()
    return server, f"redis://127.0.0.1:{port}/0"


def trunkline(folder: Path, env: dict[str, str], *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "trunkline", *arguments],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def timed_run(folder: Path, env: dict[str, str], *arguments: str) -> tuple[float, dict]:
    started = time.perf_counter()
    run = trunkline(folder, env, "run", "flow", "--json", *arguments)
    stdout, stderr = run.communicate(timeout=3600)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        sys.exit(f"trunkline run {' '.join(arguments)} failed:\n{stderr}")
    return elapsed, json.loads(stdout)


def wait_for_workers(broker: str, names: list[str]) -> None:
    from trunkline.config import Settings
    from trunkline.workers.app import celery_app

    app = celery_app(Settings.model_validate({"workers": {"broker_url": broker}}))
    deadline = time.monotonic() + 120
    while len(app.control.ping(destination=names, timeout=1.0)) < len(names):
        if time.monotonic() > deadline:
            sys.exit(f"workers {names} did not all answer within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2,4", help="worker counts to run, comma-separated")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=64, help="rows in flight in the asyncio run")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="tasks in flight per worker")
    parser.add_argument("--chunk-size", type=int, default=16, help="rows per task")
    arguments = parser.parse_args()
    counts = [int(part) for part in arguments.workers.split(",") if part.strip()]

    folder = Path(tempfile.mkdtemp(prefix="trunkline-workers-"))
    write_project(folder, arguments.rows, arguments.latency_ms)
    postgres = start_postgres()
    redis_server, broker = start_redis(folder)
    base = {key: value for key, value in os.environ.items() if not key.startswith("TRUNKLINE_")}
    results: list[tuple[str, float, dict]] = []
    try:
        env = base | {"TRUNKLINE_DATABASE_URL": postgres.new_database()}
        elapsed, summary = timed_run(folder, env, "--concurrency", str(arguments.concurrency))
        results.append(("asyncio", elapsed, summary))
        for count in counts:
            env = base | {"TRUNKLINE_DATABASE_URL": postgres.new_database(), "TRUNKLINE_BROKER_URL": broker}
            names = [f"bench{count}-{n}@local" for n in range(count)]
            workers = [
                trunkline(folder, env, "worker", f"--concurrency={arguments.worker_concurrency}", f"--name={name}")
                for name in names
            ]
            try:
                wait_for_workers(broker, names)
                elapsed, summary = timed_run(folder, env, "--workers", "celery", "--chunk-size", str(arguments.chunk_size))
                results.append((f"celery x{count}", elapsed, summary))
            finally:
                for worker in workers:
                    worker.terminate()
                for worker in workers:
                    worker.wait(timeout=60)
    finally:
        redis_server.terminate()
        redis_server.wait()
        postgres.stop()
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"{arguments.rows:,} rows, simulated latency median {arguments.latency_ms:.0f} ms, "
        f"{os.cpu_count()} cores, PostgreSQL store"
    )
    print(f"{'variant':<11} {'in flight':>9} {'seconds':>8} {'rows/s':>8} {'ok':>7} {'vs asyncio':>11}")
    baseline = arguments.rows / results[0][1]
    for name, elapsed, summary in results:
        per_worker = arguments.worker_concurrency * arguments.chunk_size
        in_flight = arguments.concurrency if name == "asyncio" else per_worker * int(name[8:])
        rate = summary["rows"] / elapsed
        print(f"{name:<11} {in_flight:>9} {elapsed:>8.1f} {rate:>8.0f} {summary['ok']:>7} {rate / baseline:>10.2f}x")


if __name__ == "__main__":
    main()
