"""An OTLP/HTTP traces endpoint on 127.0.0.1 that accepts every request and keeps nothing.

The benchmarks start it as a separate process, so that receiving spans costs
the measured process nothing. It replies to each POST with an empty body,
which is a valid ``ExportTraceServiceResponse``, and stops by itself after
``--max-seconds``.

    python benchmarks/otlp_sink.py --max-seconds 600
"""

from __future__ import annotations

import argparse
import http.server
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the http.server hook name
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@dataclass
class Sink:
    process: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/traces"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_sink(max_seconds: float = 600) -> Sink:
    """Start the sink in a child process and return it once it listens."""
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__)), "--max-seconds", str(max_seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline() if process.stdout else ""
    if not line.strip().isdigit():
        process.kill()
        raise RuntimeError(f"the OTLP sink did not start: {line!r}")
    return Sink(process, int(line))


def main() -> None:
    parser = argparse.ArgumentParser(description="An OTLP/HTTP sink for benchmarks.")
    parser.add_argument("--max-seconds", type=float, default=600, help="Stop after this long.")
    arguments = parser.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    threading.Timer(arguments.max_seconds, server.shutdown).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
