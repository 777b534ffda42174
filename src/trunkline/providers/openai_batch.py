"""OpenAI's and Azure OpenAI's Batch API: upload a JSONL of requests, create a job, poll it, read results.

The job is created on ``/v1/chat/completions`` (``/chat/completions`` on
Azure) with a 24-hour completion window. Each line of the uploaded file is
one chat completion request, built exactly as the online adapter builds it,
under a ``custom_id`` that the caller chooses and later maps back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import openai

from trunkline.errors import ErrorKind, ProviderError
from trunkline.providers.base import http_error, kind_from_codes, parse_error_body, redact_secrets
from trunkline.providers.openai import OpenAIProvider
from trunkline.types.calls import ModelRequest, ModelResponse

#: Providers whose deployments can run a step through a Batch API.
BATCH_PROVIDERS = ("openai", "azure")
COMPLETION_WINDOW = "24h"
#: Statuses after which a job changes no more.
FINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
#: The error code of a request that the job's 24-hour window closed on.
_EXPIRED_CODE = "batch_expired"


@dataclass(frozen=True)
class BatchJob:
    """The state of one job as the provider reports it at one poll."""

    batch_id: str
    status: str
    created_at: datetime
    #: When the job reached its final status, or None while it runs.
    ended_at: datetime | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    #: ``total``, ``completed`` and ``failed`` request counts.
    request_counts: dict[str, int] = field(default_factory=dict)
    #: The provider's reasons when the whole job failed, one per line.
    errors: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES


class OpenAIBatchClient:
    """The Batch API calls of one OpenAI or Azure OpenAI deployment, over its adapter's SDK client.

    Every SDK error is translated as the online adapter translates it, into
    a `ProviderError` that names the provider, model and kind.
    """

    def __init__(self, provider: OpenAIProvider) -> None:
        self.provider = provider
        self.endpoint = "/chat/completions" if provider.name == "azure" else "/v1/chat/completions"

    def request_line(self, custom_id: str, request: ModelRequest) -> dict[str, Any]:
        """Return one line of the input file: the request as the online adapter sends it."""
        body = self.provider._arguments(request)
        return {"custom_id": custom_id, "method": "POST", "url": self.endpoint, "body": body}

    async def submit(self, lines: list[dict[str, Any]], metadata: dict[str, str]) -> BatchJob:
        """Upload `lines` as a JSONL file and create a job over it."""
        content = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        client = self.provider.client
        try:
            uploaded = await client.files.create(
                file=("requests.jsonl", content.encode(), "application/jsonl"), purpose="batch"
            )
            created = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint=self.endpoint,  # type: ignore[arg-type]
                completion_window=COMPLETION_WINDOW,
                metadata=metadata,
            )
        except openai.APIError as error:
            raise self.provider._translate(error) from error
        return _job(created)

    async def retrieve(self, batch_id: str) -> BatchJob:
        try:
            return _job(await self.provider.client.batches.retrieve(batch_id))
        except openai.APIError as error:
            raise self.provider._translate(error) from error

    async def cancel(self, batch_id: str) -> BatchJob:
        try:
            return _job(await self.provider.client.batches.cancel(batch_id))
        except openai.APIError as error:
            raise self.provider._translate(error) from error

    async def result_lines(self, job: BatchJob) -> dict[str, dict[str, Any]]:
        """Read the output and error files of a finished job into its result lines, by custom_id."""
        found: dict[str, dict[str, Any]] = {}
        for file_id in (job.output_file_id, job.error_file_id):
            if not file_id:
                continue
            for line in await self._lines(file_id):
                custom_id = line.get("custom_id")
                if isinstance(custom_id, str):
                    found[custom_id] = line
        return found

    async def _lines(self, file_id: str) -> list[dict[str, Any]]:
        try:
            content = await self.provider.client.files.content(file_id)
        except openai.APIError as error:
            raise self.provider._translate(error) from error
        lines = []
        for number, text in enumerate(content.text.splitlines(), start=1):
            if not text.strip():
                continue
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as error:
                raise ProviderError(
                    f"{self.provider.name} batch file {file_id}, line {number}, is not JSON: {error}",
                    kind=ErrorKind.SERVER_ERROR,
                    provider=self.provider.name,
                    model=self.provider.model,
                ) from error
        return lines

    def outcome(self, line: dict[str, Any], request: ModelRequest) -> ModelResponse | ProviderError:
        """Read one result line into a response, or the error of that one request."""
        provider, model = self.provider.name, request.model
        secrets = (self.provider.client.api_key,)
        response = line.get("response") or {}
        status = response.get("status_code")
        body = response.get("body")

        if isinstance(status, int) and status < 400 and isinstance(body, dict):
            try:
                return self.provider._response(body, request)
            except ProviderError as error:
                return error
            except (KeyError, IndexError, TypeError) as error:
                return ProviderError(
                    f"{provider} batch result for model {model!r} is not a chat completion: {error!r}",
                    kind=ErrorKind.SERVER_ERROR,
                    provider=provider,
                    model=model,
                )
        if isinstance(status, int):
            return http_error(provider=provider, model=model, status=status, body=body, secrets=secrets)

        # No response at all: the job never ran the request, and the line's error gives the reason.
        parsed = parse_error_body({"error": line.get("error")})
        detail = parsed.message or "the result line has no response and no error message"
        kind = kind_from_codes(parsed) or ErrorKind.SERVER_ERROR
        if _EXPIRED_CODE in parsed.codes:
            kind = ErrorKind.TIMEOUT
            detail += "; resume the run to send it in a new batch"
        return ProviderError(
            redact_secrets(f"{provider} batch request for model {model!r} failed: {detail}", secrets),
            kind=kind,
            provider=provider,
            model=model,
        )


def _job(batch: Any) -> BatchJob:
    ended = batch.completed_at or batch.failed_at or batch.expired_at or batch.cancelled_at
    counts = batch.request_counts
    errors = None
    if batch.errors is not None and batch.errors.data:
        errors = "; ".join(
            f"{item.code or 'error'}: {item.message or ''}".strip() for item in batch.errors.data
        )
    return BatchJob(
        batch_id=batch.id,
        status=batch.status,
        created_at=datetime.fromtimestamp(batch.created_at, UTC),
        ended_at=datetime.fromtimestamp(ended, UTC) if ended else None,
        input_file_id=batch.input_file_id,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        request_counts=(
            {"total": counts.total, "completed": counts.completed, "failed": counts.failed}
            if counts is not None
            else {}
        ),
        errors=errors,
    )
