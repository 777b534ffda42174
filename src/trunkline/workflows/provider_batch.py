"""Batch steps: one step's requests for every row of a run, sent as one Batch API job.

Rows run their earlier steps online and stop at the batch step. Once every
row still in the run has either reached it or failed before it, the waiting
requests go to the provider as one job, which is stored with the run before
the first poll. When the job ends, each row takes its line, records it as a
call, and goes on with its later steps online.

A resumed run finds the jobs of its steps that no row has taken results from
yet, polls them instead of sending the requests again, and starts their rows
at the batch step with the values stored with the job.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trunkline.errors import CallError, ConfigError, ErrorKind, ProviderError
from trunkline.providers.openai import OpenAIProvider
from trunkline.providers.openai_batch import BatchJob, OpenAIBatchClient
from trunkline.routing.batch import BatchCall, batch_deployment, finish_batch_call, prepare_batch_call
from trunkline.routing.router import Router
from trunkline.routing.state import CallResult
from trunkline.store.batches import save_batch, uncollected_batches, update_batch
from trunkline.store.database import Store
from trunkline.types.calls import CallRecord
from trunkline.workflows.steps import ModelStep

logger = logging.getLogger(__name__)

#: Consecutive failed polls of one job, each retryable, after which its rows fail.
MAX_POLL_FAILURES = 10

#: The error kind of a request that a job ended without a result for, by the job's final status.
_ENDED_KINDS = {
    "expired": ErrorKind.TIMEOUT,
    "cancelled": ErrorKind.CANCELLED,
    "failed": ErrorKind.BAD_REQUEST,
}


@dataclass(frozen=True)
class BatchProgress:
    """A job's state at one poll, for progress displays."""

    step: str
    batch_id: str
    status: str
    total: int
    completed: int
    failed: int


ProgressCallback = Callable[[BatchProgress], None]


@dataclass
class _JobResult:
    """A finished job's result lines, or why the job gave none."""

    job: BatchJob | None
    lines: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The failure every row of the job gets when no line is usable.
    error: CallError | None = None


@dataclass
class _Pending:
    call: BatchCall
    custom_id: str
    snapshot: dict[str, Any]


class BatchStep:
    """Sends one model step's requests for a run's rows as Batch API jobs and hands each row its result.

    Args:
        step: the model step whose workflow sets ``mode = "batch"`` on it.
        router: builds requests and records, and owns the provider clients.
        store: keeps the jobs with the run.
        run_id: the run the jobs belong to.
        expected: indexes of the rows that may still reach the step.
        poll_interval_s: seconds between polls of a job.
        on_progress: receives each poll's state.

    Raises:
        ConfigError: the step's deployment has no Batch API.
    """

    def __init__(
        self,
        step: ModelStep,
        *,
        router: Router,
        store: Store,
        run_id: str,
        expected: set[int],
        poll_interval_s: float,
        on_progress: ProgressCallback | None = None,
    ) -> None:
        self.step = step
        self.router = router
        self.store = store
        self.run_id = run_id
        self.expected = set(expected)
        self.poll_interval_s = poll_interval_s
        self.on_progress = on_progress
        self.deployment_name = batch_deployment(router.settings, step.route, step.name)
        provider = router.provider(self.deployment_name)
        if not isinstance(provider, OpenAIProvider):
            raise ConfigError(
                f"step {step.name!r} runs as batch on deployment {self.deployment_name!r}, whose "
                f"adapter is {type(provider).__name__}, not the OpenAI adapter that the Batch API needs"
            )
        self.client = OpenAIBatchClient(provider)
        self._waiting: dict[int, _Pending] = {}
        self._results: dict[int, asyncio.Future[_JobResult]] = {}
        self._custom_ids: dict[int, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Row index to the values and earlier calls stored with an unfinished job.
        self.resumed: dict[int, dict[str, Any]] = {}

    def custom_id(self, index: int) -> str:
        return f"{self.run_id}:{self.step.name}:{index}"

    def resume(self) -> None:
        """Follow the step's stored jobs that no row has taken results from."""
        loop = asyncio.get_running_loop()
        for stored in uncollected_batches(self.store, self.run_id, self.step.name):
            futures = []
            for custom_id, entry in stored["rows"].items():
                index = entry["row_index"]
                self.resumed[index] = entry
                self._results[index] = loop.create_future()
                self._custom_ids[index] = custom_id
                self.expected.discard(index)
                futures.append(self._results[index])
            logger.info(
                "run %s, step %s: polling batch %s again, submitted earlier for %d rows",
                self.run_id, self.step.name, stored["batch_id"], stored["row_count"],
            )  # fmt: skip
            self._start(self._follow(stored["batch_id"], futures))

    async def call(self, index: int, values: dict[str, Any], snapshot: dict[str, Any]) -> CallResult:
        """Wait for row `index`'s result from its job; `snapshot` is stored with the job for a resume.

        Raises:
            CallError: the row's request failed, alone or with its whole job.
        """
        call = prepare_batch_call(
            self.router,
            self.step.messages(values),
            deployment_name=self.deployment_name,
            route=self.step.route,
            output=self.step.output_schema(values),
            temperature=self.step.spec.temperature,
            max_tokens=self.step.spec.max_tokens,
            prompt_name=self.step.prompt_name(),
            prompt_version=self.step.prompt_version(),
        )
        if index not in self._results:
            self._results[index] = asyncio.get_running_loop().create_future()
            self._custom_ids[index] = self.custom_id(index)
            self._waiting[index] = _Pending(call, self._custom_ids[index], snapshot)
            self.leave(index)
        result = await self._results[index]
        return self._finish(call, self._custom_ids[index], result)

    def leave(self, index: int) -> None:
        """Count row `index` out of the rows that may still reach the step, and send the job when none may."""
        self.expected.discard(index)
        if self.expected or not self._waiting:
            return
        waiting, self._waiting = self._waiting, {}
        self._start(self._submit(waiting))

    def cancel(self) -> None:
        """Stop polling; the jobs stay stored, so a resumed run polls them again."""
        for task in self._tasks:
            task.cancel()

    def _start(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _finish(self, call: BatchCall, custom_id: str, result: _JobResult) -> CallResult:
        job = result.job
        now = datetime.now(UTC)
        # Each row raises its own copy, because raising stores the row's record on the error.
        outcome: Any = copy.copy(result.error)
        if outcome is None:
            assert job is not None
            line = result.lines.get(custom_id)
            outcome = self.client.outcome(line, call.request) if line else self._missing(job)
        return finish_batch_call(
            self.router,
            call,
            outcome,
            batch_id=job.batch_id if job else None,
            job_started=job.created_at if job else now,
            job_ended=(job.ended_at or now) if job else now,
        )

    def _missing(self, job: BatchJob) -> ProviderError:
        """Return the error of a request that the finished job has no line for."""
        reason = f"batch {job.batch_id} ended with status {job.status} without a result for this request"
        if job.errors:
            reason += f": {job.errors}"
        kind = _ENDED_KINDS.get(job.status, ErrorKind.SERVER_ERROR)
        hint = {
            ErrorKind.TIMEOUT: "; the provider did not run it within the 24 h window, so resume the run to send it again",
            ErrorKind.CANCELLED: "; the job was cancelled, so resume the run to send it again",
        }.get(kind, "")
        return ProviderError(
            f"{self.client.provider.name} {reason}{hint}",
            kind=kind,
            provider=self.client.provider.name,
            model=self.client.provider.model,
        )

    async def _submit(self, waiting: dict[int, _Pending]) -> None:
        indexes = sorted(waiting)
        futures = [self._results[index] for index in indexes]
        lines = [self.client.request_line(waiting[i].custom_id, waiting[i].call.request) for i in indexes]
        try:
            job = await self.client.submit(lines, {"run_id": self.run_id, "step": self.step.name})
        except CallError as error:
            logger.warning(
                "run %s, step %s: submitting a batch of %d requests failed: %s",
                self.run_id, self.step.name, len(indexes), error,
            )  # fmt: skip
            _settle(futures, _JobResult(job=None, error=error))
            return
        save_batch(
            self.store,
            batch_id=job.batch_id,
            run_id=self.run_id,
            step=self.step.name,
            deployment=self.deployment_name,
            provider=self.client.provider.name,
            input_file_id=job.input_file_id or "",
            status=job.status,
            rows={waiting[i].custom_id: {"row_index": i, **waiting[i].snapshot} for i in indexes},
            created_at=job.created_at,
        )
        logger.info(
            "run %s, step %s: batch %s submitted with %d requests, status %s",
            self.run_id, self.step.name, job.batch_id, len(indexes), job.status,
        )  # fmt: skip
        self._report(job)
        await self._follow(job.batch_id, futures, job)

    async def _follow(
        self, batch_id: str, futures: list[asyncio.Future[_JobResult]], job: BatchJob | None = None
    ) -> None:
        """Poll the job until it ends, store each change, and hand its lines to the waiting rows."""
        failures = 0
        while job is None or not job.finished:
            if job is not None:
                await asyncio.sleep(self.poll_interval_s)
            try:
                polled = await self.client.retrieve(batch_id)
            except CallError as error:
                failures += 1
                if not error.kind.retryable or failures >= MAX_POLL_FAILURES:
                    logger.warning(
                        "run %s, step %s: polling batch %s failed (%s); its rows fail now, and "
                        "resuming the run polls it again",
                        self.run_id, self.step.name, batch_id, error,
                    )  # fmt: skip
                    _settle(futures, _JobResult(job=job, error=error))
                    return
                logger.warning(
                    "run %s, step %s: polling batch %s failed (%s), poll %d of at most %d; "
                    "polling again in %.0f s",
                    self.run_id, self.step.name, batch_id, error, failures, MAX_POLL_FAILURES,
                    self.poll_interval_s,
                )  # fmt: skip
                job = job or _placeholder(batch_id)
                continue
            failures = 0
            if job is None or polled.status != job.status or polled.request_counts != job.request_counts:
                update_batch(self.store, batch_id, status=polled.status, request_counts=polled.request_counts)
                self._report(polled)
            job = polled
        try:
            lines = await self.client.result_lines(job)
        except CallError as error:
            _settle(futures, _JobResult(job=job, error=error))
            return
        update_batch(
            self.store,
            batch_id,
            collected=True,
            ended_at=job.ended_at,
            output_file_id=job.output_file_id,
            error_file_id=job.error_file_id,
            error=job.errors,
        )
        logger.info(
            "run %s, step %s: batch %s ended with status %s, %d result lines",
            self.run_id, self.step.name, batch_id, job.status, len(lines),
        )  # fmt: skip
        _settle(futures, _JobResult(job=job, lines=lines))

    def _report(self, job: BatchJob) -> None:
        if self.on_progress is None:
            return
        counts = job.request_counts
        self.on_progress(
            BatchProgress(
                step=self.step.name,
                batch_id=job.batch_id,
                status=job.status,
                total=counts.get("total", 0),
                completed=counts.get("completed", 0),
                failed=counts.get("failed", 0),
            )
        )


def _settle(futures: list[asyncio.Future[_JobResult]], result: _JobResult) -> None:
    for future in futures:
        if not future.done():
            future.set_result(result)


def _placeholder(batch_id: str) -> BatchJob:
    """Stand for a job not yet read, so the poll loop waits before its next try."""
    return BatchJob(batch_id=batch_id, status="in_progress", created_at=datetime.now(UTC))


def row_snapshot(values: dict[str, Any], params: dict[str, Any], records: list[CallRecord]) -> dict[str, Any]:
    """Return what a resumed run needs of a row at a batch step: its values and its earlier calls.

    Parameters are left out, because a resumed run must be given the same
    ones. Values that are not JSON are stored as their text.
    """
    own = {key: value for key, value in values.items() if key not in params or params[key] is not value}
    return {
        "values": json.loads(json.dumps(own, default=str)),
        "calls": [record.model_dump(mode="json") for record in records],
    }
