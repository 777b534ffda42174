"""Sending a plan's requests on schedule, and what came back from each."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from trunkline.errors import CallError
from trunkline.loadtest.plan import PlannedRequest
from trunkline.loadtest.workflow_tasks import WorkflowTask
from trunkline.routing.router import Router
from trunkline.types.calls import CallRecord

logger = logging.getLogger(__name__)

#: Launches in a row without giving other tasks a turn, when the sender runs behind schedule.
_LAUNCH_BATCH = 64


@dataclass(frozen=True, slots=True)
class AttemptSample:
    """One attempt of a call: where it went and how it ended."""

    deployment: str
    outcome: Literal["ok", "error"]
    error_kind: str | None
    status_code: int | None


@dataclass(slots=True)
class CallSample:
    """One finished request of a load test.

    The attempt, fallback and downgrade fields are None for requests sent to
    a gateway over HTTP, whose responses do not carry them.
    """

    index: int
    route: str
    #: Seconds from the start of the test to the send and to the response.
    started_s: float
    ended_s: float
    latency_ms: float
    outcome: Literal["ok", "error"]
    error_kind: str | None = None
    status_code: int | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    #: The call's cost in USD, or None where no price is known.
    cost_usd: float | None = None
    attempts: list[AttemptSample] | None = None
    retries: int | None = None
    fallbacks: int | None = None
    downgrades: list[str] | None = None
    #: Whether a budget stopped the call or moved it to another deployment.
    budget_bound: bool = False


class Sender(Protocol):
    """Sends one planned request and describes what came back."""

    async def send(self, planned: PlannedRequest, started_s: float) -> CallSample: ...


def sample_from_records(
    planned: PlannedRequest,
    records: list[CallRecord],
    *,
    started_s: float,
    ended_s: float,
    error_kind: str | None = None,
) -> CallSample:
    """Describe a finished arrival by the records of its calls: one for a route, any for a workflow.

    A route arrival takes its latency and outcome from its one record. A
    workflow row's latency is its whole duration, it failed when
    `error_kind` is set, and its cost and tokens are summed over its calls.
    """
    attempts = [
        AttemptSample(
            deployment=attempt.deployment,
            outcome=attempt.outcome,
            error_kind=attempt.error_kind.value if attempt.error_kind else None,
            status_code=attempt.status_code,
        )
        for record in records
        for attempt in record.attempts
    ]
    budget_bound = any(_budget_bound(record) for record in records)
    unpriced = any(record.cost.price_missing for record in records)
    if planned.row is None:
        latency_ms = records[0].latency_ms
        error_kind = records[0].error_kind.value if records[0].error_kind else None
    else:
        latency_ms = (ended_s - started_s) * 1000.0
    return CallSample(
        index=planned.index,
        route=planned.route,
        started_s=started_s,
        ended_s=ended_s,
        latency_ms=latency_ms,
        outcome="ok" if error_kind is None else "error",
        error_kind=error_kind,
        status_code=attempts[-1].status_code if attempts else None,
        input_tokens=sum(record.usage.input_tokens for record in records),
        output_tokens=sum(record.usage.output_tokens for record in records),
        cost_usd=None if unpriced else sum(record.cost.total_usd or 0.0 for record in records),
        attempts=attempts,
        retries=sum(record.retries for record in records),
        fallbacks=sum(record.fallbacks_taken for record in records),
        downgrades=[downgrade.reason for record in records for downgrade in record.downgrades],
        budget_bound=budget_bound,
    )


def _budget_bound(record: CallRecord) -> bool:
    if record.error_kind is not None and record.error_kind.value == "budget_exceeded":
        return True
    if any(downgrade.reason == "budget" for downgrade in record.downgrades):
        return True
    return any(hop.reason == "budget_exceeded" for hop in record.fallbacks)


class RouterSender:
    """Sends each arrival through a `Router`, as an application in the same process would.

    A route arrival is one `Router.complete` call; a workflow arrival runs
    its row through the workflow's steps, which call the same router.
    """

    def __init__(
        self,
        router: Router,
        clock_start: float,
        workflows: Mapping[int, WorkflowTask] | None = None,
    ) -> None:
        self.router = router
        self.clock_start = clock_start
        self.workflows = dict(workflows or {})

    async def send(self, planned: PlannedRequest, started_s: float) -> CallSample:
        loop = asyncio.get_running_loop()
        error_kind = None
        if planned.row is not None:
            workflow = self.workflows[planned.task]
            records, error_kind = await workflow.run(planned.row, self.router)
        else:
            records = [await self._complete(planned)]
        ended_s = loop.time() - self.clock_start
        return sample_from_records(
            planned, records, started_s=started_s, ended_s=ended_s, error_kind=error_kind
        )

    async def _complete(self, planned: PlannedRequest) -> CallRecord:
        try:
            result = await self.router.complete(
                planned.prompt(),
                route=planned.route,
                max_tokens=planned.output_tokens,
                tags=planned.tags or None,
            )
        except CallError as error:
            record = getattr(error, "record", None)
            if record is None:
                raise
            return record
        return result.record


@dataclass
class RunOutcome:
    """The outcome of a plan: the finished samples and the requests that never finished."""

    samples: list[CallSample] = field(default_factory=list)
    #: Requests not sent because `max_in_flight` requests were already open.
    skipped: int = 0
    #: Requests still open when the drain time ran out, then cancelled.
    unfinished: int = 0
    #: Seconds from the start to the last arrival's send, and to the end of the drain.
    send_s: float = 0.0
    elapsed_s: float = 0.0
    #: How late each request was sent against its planned time, in seconds.
    lags_s: list[float] = field(default_factory=list)


async def run_plan(
    plan: list[PlannedRequest],
    sender: Sender,
    *,
    clock_start: float,
    drain_s: float,
    max_in_flight: int,
) -> RunOutcome:
    """Send each planned request at its time, then wait up to `drain_s` for the open ones.

    `clock_start` is the loop time that the plan's offsets count from.
    Sending stops when the plan ends, so the run is bounded by the plan's
    duration plus `drain_s`. Requests open after the drain are cancelled
    and counted as unfinished.

    Raises:
        TrunklineError: a request failed for a reason other than the call
            itself, such as a missing API key; the rest are cancelled.
    """
    loop = asyncio.get_running_loop()
    outcome = RunOutcome()
    open_tasks: set[asyncio.Task[CallSample]] = set()
    fatal: list[BaseException] = []

    def finished(task: asyncio.Task[CallSample]) -> None:
        open_tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            outcome.samples.append(task.result())
        else:
            fatal.append(error)

    in_a_row = 0
    for planned in plan:
        if fatal:
            break
        delay = clock_start + planned.offset_s - loop.time()
        if delay > 0 or in_a_row >= _LAUNCH_BATCH:
            await asyncio.sleep(max(delay, 0.0))
            in_a_row = 0
        in_a_row += 1
        now_s = loop.time() - clock_start
        outcome.lags_s.append(max(now_s - planned.offset_s, 0.0))
        if len(open_tasks) >= max_in_flight:
            outcome.skipped += 1
            continue
        task = asyncio.create_task(sender.send(planned, now_s))
        open_tasks.add(task)
        task.add_done_callback(finished)
    outcome.send_s = loop.time() - clock_start
    if open_tasks and not fatal:
        await asyncio.wait(
            set(open_tasks), timeout=drain_s, return_when=asyncio.FIRST_EXCEPTION
        )
    outcome.unfinished = len(open_tasks) if not fatal else 0
    for task in list(open_tasks):
        task.cancel()
    if open_tasks:
        await asyncio.gather(*open_tasks, return_exceptions=True)
    outcome.elapsed_s = loop.time() - clock_start
    if fatal:
        raise fatal[0]
    if outcome.unfinished:
        logger.warning(
            "%d requests were still open %.0fs after the last arrival and were cancelled",
            outcome.unfinished,
            drain_s,
        )
    return outcome
