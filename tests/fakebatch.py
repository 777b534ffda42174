"""A local HTTP server that serves OpenAI's Files and Batch endpoints, as the `openai` SDK calls them.

Tests point a real `openai` client (or a Trunkline deployment's ``base_url``)
at `FakeBatchServer.openai_base_url`. The server binds 127.0.0.1 on an
ephemeral port and serves from a background thread.

Routes:

- ``POST /v1/files``: a multipart upload; the file is kept in memory.
- ``GET /v1/files/{id}/content``: a kept file's bytes.
- ``POST /v1/batches``: a job over an uploaded JSONL file.
- ``GET /v1/batches/{id}``: the job; each call is one poll.
- ``POST /v1/batches/{id}/cancel``: cancels a job that has not ended.

Each route is also served under ``/openai`` in place of ``/v1``, the form
that the SDK's Azure client sends (with ``?api-version=...``), so that tests
can point an Azure OpenAI deployment at the server's root URL.

A job reports ``validating``, then ``in_progress`` for `polls_before_done`
polls, then its end. At its end it runs every line of its input file through
`respond` (by default a reply in `fakeserver.openai_completion`'s shape that
echoes the last message) and writes the output and error files. Lines whose
``custom_id`` `fail_line` accepts go to the error file with HTTP 400 instead.
`outcome` can make the whole job fail, expire or stay in progress.
"""

from __future__ import annotations

import email.parser
import email.policy
import http.server
import itertools
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from fakeserver import openai_completion, openai_error

_ids = itertools.count(1)

Outcome = Literal["completed", "failed", "expired", "never"]


def echo_reply(body: dict[str, Any]) -> dict[str, Any]:
    """Return a chat completion whose content is the request's last message."""
    return openai_completion(content=body["messages"][-1]["content"], model=body["model"])


@dataclass
class _Job:
    batch_id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created_at: int
    status: str = "validating"
    polls: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    ended_at: int | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})


class FakeBatchServer:
    """Files and Batch endpoints over an in-memory store, with counters of what clients did.

    Args:
        polls_before_done: polls that report ``in_progress`` before the job ends.
        outcome: ``completed`` runs the lines; ``failed`` rejects the whole
            input file; ``expired`` ends the job with every line expired;
            ``never`` keeps the job in progress.
        respond: builds the chat completion body for one request body.
        fail_line: returns True for the custom_ids that fail with HTTP 400.

    `poll_errors` lists HTTP statuses, such as 500 or 404, that the next polls
    return in order instead of the job; each is used once.
    """

    def __init__(
        self,
        *,
        polls_before_done: int = 1,
        outcome: Outcome = "completed",
        respond: Callable[[dict[str, Any]], dict[str, Any]] = echo_reply,
        fail_line: Callable[[str], bool] = lambda custom_id: False,
    ) -> None:
        self.polls_before_done = polls_before_done
        self.outcome = outcome
        self.respond = respond
        self.fail_line = fail_line
        self.poll_errors: list[int] = []
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, _Job] = {}
        self.uploads = 0
        self.creates = 0
        self.polls = 0
        self.cancels = 0
        self._lock = threading.Lock()
        self._httpd: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The server's root URL, which an Azure OpenAI deployment takes as its endpoint."""
        if self._httpd is None:
            raise RuntimeError("the fake batch server is not running; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        """The ``base_url`` the OpenAI SDK expects, which includes ``/v1``."""
        return f"{self.base_url}/v1"

    def start(self) -> None:
        handler = type("BoundBatchHandler", (_Handler,), {"server_state": self})
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._httpd = None

    def __enter__(self) -> FakeBatchServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def input_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """Return the decoded lines of a job's input file."""
        with self._lock:
            return self._lines(self.jobs[batch_id])

    def upload(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        with self._lock:
            self.uploads += 1
            file_id = self._keep(content)
        return _file_object(file_id, len(content), filename, purpose)

    def create(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if body.get("input_file_id") not in self.files:
                return 404, openai_error(f"No such File object: {body.get('input_file_id')}")
            if body.get("completion_window") != "24h" or not body.get("endpoint"):
                return 400, openai_error("completion_window must be 24h and endpoint must be set")
            self.creates += 1
            job = _Job(
                batch_id=f"batch_fake{next(_ids):06d}",
                input_file_id=body["input_file_id"],
                endpoint=body["endpoint"],
                metadata=body.get("metadata") or {},
                created_at=int(time.time()),
            )
            self.jobs[job.batch_id] = job
            return 200, self._batch_object(job)

    def poll(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(batch_id)
            if job is None:
                return 404, openai_error(f"No batch found with id '{batch_id}'.")
            self.polls += 1
            if self.poll_errors:
                status = self.poll_errors.pop(0)
                return status, openai_error(f"planned poll failure with HTTP {status}", error_type="server_error")
            if job.ended_at is None and job.status != "cancelled":
                job.polls += 1
                if job.polls > self.polls_before_done and self.outcome != "never":
                    self._end(job)
                else:
                    job.status = "in_progress"
                    job.counts["total"] = len(self._lines(job))
            return 200, self._batch_object(job)

    def cancel(self, batch_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(batch_id)
            if job is None:
                return 404, openai_error(f"No batch found with id '{batch_id}'.")
            self.cancels += 1
            if job.ended_at is None:
                job.status, job.ended_at = "cancelled", int(time.time())
            return 200, self._batch_object(job)

    def content(self, file_id: str) -> bytes | None:
        with self._lock:
            return self.files.get(file_id)

    def _keep(self, content: bytes) -> str:
        file_id = f"file-fake{next(_ids):06d}"
        self.files[file_id] = content
        return file_id

    def _lines(self, job: _Job) -> list[dict[str, Any]]:
        content = self.files[job.input_file_id].decode()
        return [json.loads(line) for line in content.splitlines() if line.strip()]

    def _end(self, job: _Job) -> None:
        job.ended_at = int(time.time())
        lines = self._lines(job)
        job.counts["total"] = len(lines)
        if self.outcome == "failed":
            job.status = "failed"
            return
        outputs, errors = [], []
        for line in lines:
            custom_id = line["custom_id"]
            if self.outcome == "expired":
                errors.append(_expired_line(custom_id))
            elif self.fail_line(custom_id):
                body = openai_error("Invalid 'messages': the request was rejected.", code="invalid_value")
                errors.append(_result_line(custom_id, 400, body))
            else:
                outputs.append(_result_line(custom_id, 200, self.respond(line["body"])))
        job.status = "expired" if self.outcome == "expired" else "completed"
        job.counts.update(completed=len(outputs), failed=len(errors))
        if outputs:
            job.output_file_id = self._keep(_jsonl(outputs))
        if errors:
            job.error_file_id = self._keep(_jsonl(errors))

    def _batch_object(self, job: _Job) -> dict[str, Any]:
        ended = job.ended_at
        errors = None
        if job.status == "failed":
            errors = {
                "object": "list",
                "data": [{"code": "invalid_json_line", "message": "The input file could not be read.", "param": None, "line": 1}],
            }
        return {
            "id": job.batch_id,
            "object": "batch",
            "endpoint": job.endpoint,
            "errors": errors,
            "input_file_id": job.input_file_id,
            "completion_window": "24h",
            "status": job.status,
            "output_file_id": job.output_file_id,
            "error_file_id": job.error_file_id,
            "created_at": job.created_at,
            "in_progress_at": job.created_at if job.polls else None,
            "expires_at": job.created_at + 86400,
            "completed_at": ended if job.status == "completed" else None,
            "failed_at": ended if job.status == "failed" else None,
            "expired_at": ended if job.status == "expired" else None,
            "cancelled_at": ended if job.status == "cancelled" else None,
            "request_counts": dict(job.counts),
            "metadata": job.metadata,
        }


def _file_object(file_id: str, size: int, filename: str, purpose: str) -> dict[str, Any]:
    return {
        "id": file_id,
        "object": "file",
        "bytes": size,
        "created_at": int(time.time()),
        "filename": filename,
        "purpose": purpose,
        "status": "processed",
    }


def _result_line(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    response = {"status_code": status, "request_id": f"req_fake{next(_ids):06d}", "body": body}
    return {"id": f"batch_req_fake{next(_ids):06d}", "custom_id": custom_id, "response": response, "error": None}


def _expired_line(custom_id: str) -> dict[str, Any]:
    error = {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    return {"id": f"batch_req_fake{next(_ids):06d}", "custom_id": custom_id, "response": None, "error": error}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


_BATCH = re.compile(r"^/v1/batches/(?P<id>[^/]+)$")
_CANCEL = re.compile(r"^/v1/batches/(?P<id>[^/]+)/cancel$")
_CONTENT = re.compile(r"^/v1/files/(?P<id>[^/]+)/content$")


class _Handler(http.server.BaseHTTPRequestHandler):
    server_state: FakeBatchServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Discard the access log; tests read the server's counters instead."""

    def _path(self) -> str:
        path = urllib.parse.urlsplit(self.path).path
        return "/v1/" + path.removeprefix("/openai/") if path.startswith("/openai/") else path

    def do_POST(self) -> None:
        path = self._path()
        raw = self.rfile.read(int(self.headers.get("content-length") or 0))
        state = self.server_state
        if path == "/v1/files":
            upload = self._multipart(raw)
            if "file" not in upload or upload.get("purpose", (b"",))[0] != b"batch":
                self._json(400, openai_error("expected a multipart body with file and purpose=batch"))
                return
            content, filename = upload["file"]
            self._json(200, state.upload(content, filename or "upload.jsonl", "batch"))
        elif path == "/v1/batches":
            self._json(*state.create(json.loads(raw or b"{}")))
        elif match := _CANCEL.match(path):
            self._json(*state.cancel(match.group("id")))
        else:
            self._json(404, openai_error(f"no route for POST {path}"))

    def do_GET(self) -> None:
        path = self._path()
        state = self.server_state
        if match := _BATCH.match(path):
            self._json(*state.poll(match.group("id")))
        elif match := _CONTENT.match(path):
            content = state.content(match.group("id"))
            if content is None:
                self._json(404, openai_error(f"No such File object: {match.group('id')}"))
                return
            self._send(200, content, "application/octet-stream")
        else:
            self._json(404, openai_error(f"no route for GET {path}"))

    def _multipart(self, raw: bytes) -> dict[str, tuple[bytes, str | None]]:
        header = f"Content-Type: {self.headers.get('content-type')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        parts: dict[str, tuple[bytes, str | None]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                parts[name] = (part.get_payload(decode=True) or b"", part.get_filename())
        return parts

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
