"""Running one row of a distributed run inside a worker, at most once in effect.

Rows reach a worker in Celery task messages (`RowsMessage`). The broker
hands a message out again when the worker that took it dies, so a row can
arrive more than once. Three things keep each row stored and paid for once:

- a row already stored ok is not run again: the workers keep the set of
  such rows in Redis;
- a lease in Redis, renewed while the row runs, keeps a second copy of the
  row waiting while the first one is alive; the copy runs the row once the
  lease has lapsed, which is what a killed worker leaves behind;
- the row's call records and spans are held in memory while it runs and
  stored in one transaction with its result (`store_rows_once`), which
  writes nothing if the row is already ok. A worker killed mid-row leaves
  none of that row's records behind, and the retry's are the ones kept.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from trunkline.config import Settings
from trunkline.errors import ConfigError, StoreError, TrunklineError
from trunkline.routing.router import Router
from trunkline.store.database import Store
from trunkline.store.runs import RowWithRecords, get_run
from trunkline.store.writer import StoreWriter, call_row, span_row
from trunkline.tracing import join_run
from trunkline.types.calls import CallRecord
from trunkline.types.spans import SpanRecord
from trunkline.workers.commits import RowCommits
from trunkline.workflows.runner import BatchRunner
from trunkline.workflows.spec import load_workflow

logger = logging.getLogger(__name__)

#: The start of every Redis key that runs and workers share.
KEY_PREFIX = "trunkline:"
#: Seconds a run's shared keys are kept after their last change.
RUN_KEYS_TTL_S = 7 * 24 * 3600
#: Runs whose runners a worker keeps built at once.
_CACHED_RUNS = 8


class RowsMessage(BaseModel):
    """Rows of a run as sent to a worker, with all the worker needs to run them as the run's own process would."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    trace_id: str
    run_span_id: str
    workflow_path: str
    workflow_hash: str
    #: `settings_hash` of the run's configuration, which the worker's must match.
    settings_hash: str
    params: dict[str, Any]
    prompt_overrides: dict[str, str] = {}
    budget_usd: float | None = None
    #: (row index, row) pairs, run at the same time.
    rows: list[tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class RowOutcome:
    """The outcome of one delivery of a row.

    `status` is ``stored`` (this delivery ran and stored the row),
    ``already_stored`` (the run had it as ok, or another copy stored it
    first), ``held`` (another worker has its lease, so retry in
    `retry_in_s`), ``stopped`` (the run was stopped) or ``refused`` (the
    worker cannot run it; `problem` is the reason, which the run receives).
    ``taken`` is only the state between taking the lease and running the row.
    """

    status: str
    retry_in_s: float | None = None
    problem: str | None = None


@dataclass
class _RowRecords:
    calls: list[CallRecord] = field(default_factory=list)
    spans: list[SpanRecord] = field(default_factory=list)


_row_records: ContextVar[_RowRecords | None] = ContextVar("trunkline_row_records", default=None)


class RowCapture:
    """A tracing exporter that keeps the records of the row running in this context in memory.

    Records made outside a row go on to the worker's background writer.
    """

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def export_call(self, record: CallRecord) -> None:
        records = _row_records.get()
        if records is None:
            self.writer.export_call(record)
        else:
            records.calls.append(record)

    def export_span(self, record: SpanRecord) -> None:
        records = _row_records.get()
        if records is None:
            self.writer.export_span(record)
        else:
            records.spans.append(record)


@contextmanager
def holding_records() -> Iterator[_RowRecords]:
    records = _RowRecords()
    token = _row_records.set(records)
    try:
        yield records
    finally:
        _row_records.reset(token)


# Take the leases of a delivery's rows, except where the run was stopped or
# a row is done. KEYS: the run's stop flag, its set of rows stored ok, then
# each row's lease. ARGV: holder, lease in ms, then each row's index.
# Returns a verdict and a number per row: the ms left on a lease held by
# another worker, else 0.
_TAKE_SCRIPT = """
local stopped = redis.call('EXISTS', KEYS[1]) == 1
local verdicts = {}
for i = 3, #KEYS do
  local index = ARGV[i]
  if stopped then
    table.insert(verdicts, 'stopped')
    table.insert(verdicts, 0)
  elseif redis.call('SISMEMBER', KEYS[2], index) == 1 then
    table.insert(verdicts, 'already_stored')
    table.insert(verdicts, 0)
  elseif redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    table.insert(verdicts, 'taken')
    table.insert(verdicts, 0)
  else
    table.insert(verdicts, 'held')
    table.insert(verdicts, redis.call('PTTL', KEYS[i]))
  end
end
return verdicts
"""

# Mark a row done (unless ARGV[1] is empty), tell the run it ended (unless
# ARGV[4] is empty), and release its lease if this holder still has it.
# KEYS: the run's set of rows stored ok, the row's lease, the run's list of
# ended rows. ARGV: row index, holder, seconds the run's keys are kept, the
# ended row's entry.
_FINISH_SCRIPT = """
if ARGV[1] ~= '' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
if ARGV[4] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
if redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 0
"""

# Renew the leases that are still this holder's. KEYS: the leases. ARGV:
# holder, lease in ms. Returns how many it renewed.
_RENEW_SCRIPT = """
local renewed = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    renewed = renewed + 1
  end
end
return renewed
"""


#: The parts of the configuration that change what a row does or costs.
_ROW_SETTINGS = {"deployments", "routes", "prices", "budgets", "default_route", "redact_patterns"}


def settings_hash(settings: Settings) -> str:
    """Hash the deployments, routes, prices, budgets and redaction of a configuration.

    A worker runs a row with its own configuration, so a worker whose
    configuration differs from the run's would produce other outputs at
    other prices than the run's own process.
    """
    encoded = json.dumps(settings.model_dump(mode="json", include=_ROW_SETTINGS), sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()


def run_key(run_id: str, what: str, prefix: str = KEY_PREFIX) -> str:
    """Return the Redis key of one of a run's shared values: ``stopped``, ``problems`` or a row's lease."""
    return f"{prefix}run:{run_id}:{what}"


class RowExecutor:
    """Runs rows for a worker process on one event loop, with one router and one store.

    Args:
        settings: the worker's configuration; its shared Redis keeps the
            limits, budgets and row leases.
        store: the store that rows and their records go to.
        writer: the background writer for records made outside any row.
        redis_url: the Redis that keeps row leases and run signals.
        lease_s: seconds a row's lease lasts unless renewed.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store,
        writer: StoreWriter,
        redis_url: str,
        lease_s: float,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        import redis.asyncio  # imported here: only workers need it

        self.settings = settings
        self.store = store
        self.writer = writer
        self.router = Router(settings)
        self.lease_s = lease_s
        self.key_prefix = key_prefix
        self._redis = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        self._renew = self._redis.register_script(_RENEW_SCRIPT)
        self._take = self._redis.register_script(_TAKE_SCRIPT)
        self._finish = self._redis.register_script(_FINISH_SCRIPT)
        self._commits = RowCommits(store)
        self._runners: OrderedDict[str, BatchRunner] = OrderedDict()
        self._building = threading.Lock()

    async def aclose(self) -> None:
        await self.router.aclose()
        await self._redis.aclose()

    async def handle(self, message: RowsMessage) -> list[RowOutcome]:
        """Run the delivered rows, each unless it is stored, held elsewhere, or its run was stopped."""
        runner = self._runners.get(message.run_id)
        if runner is None:
            try:
                runner = await asyncio.to_thread(self._runner, message)
            except TrunklineError as error:
                outcome = await self._report_problem(message, str(error))
                return [outcome] * len(message.rows)
        holder = secrets.token_hex(8)
        lease_ms = max(int(self.lease_s * 1000), 1)
        outcomes = await self._take_leases(message, holder, lease_ms)
        taken = [position for position, outcome in enumerate(outcomes) if outcome.status == "taken"]
        if not taken:
            return outcomes

        leases = [self._lease_key(message.run_id, message.rows[position][0]) for position in taken]
        renewing = asyncio.create_task(self._keep_leases(leases, holder, lease_ms))
        try:
            finished = await asyncio.gather(
                *(self._handle_row(runner, message, *message.rows[position], holder) for position in taken)
            )
        finally:
            renewing.cancel()
        for position, outcome in zip(taken, finished, strict=True):
            outcomes[position] = outcome
        return outcomes

    async def _take_leases(self, message: RowsMessage, holder: str, lease_ms: int) -> list[RowOutcome]:
        """Take the leases of the message's rows in one script; a taken row's outcome has status ``taken``."""
        run_id = message.run_id
        flat = await self._take(
            keys=[
                run_key(run_id, "stopped", self.key_prefix),
                run_key(run_id, "done", self.key_prefix),
                *(self._lease_key(run_id, index) for index, _ in message.rows),
            ],
            args=[holder, lease_ms, *(index for index, _ in message.rows)],
        )
        outcomes = []
        for verdict, left_ms in zip(flat[::2], flat[1::2], strict=True):
            retry_in_s = max(int(left_ms), 100) / 1000.0 if verdict == "held" else None
            outcomes.append(RowOutcome(verdict, retry_in_s=retry_in_s))
        return outcomes

    def _lease_key(self, run_id: str, index: int) -> str:
        return run_key(run_id, f"row:{index}", self.key_prefix)

    async def _handle_row(
        self, runner: BatchRunner, message: RowsMessage, index: int, row: dict[str, Any], holder: str
    ) -> RowOutcome:
        try:
            return await self._run_taken_row(runner, message, index, row, holder)
        except Exception as error:  # the store or Redis failed: the run must hear of it, or it waits forever
            logger.exception("row %d of run %s failed in the worker", index, message.run_id)
            problem = f"row {index} failed in a worker: {type(error).__name__}: {error}"
            return await self._report_problem(message, problem)

    async def _run_taken_row(
        self, runner: BatchRunner, message: RowsMessage, index: int, row: dict[str, Any], holder: str
    ) -> RowOutcome:
        """Run a row whose lease this delivery holds, store it, then mark it and release the lease."""
        run_id = message.run_id
        lease = self._lease_key(run_id, index)
        finished = False
        ended = ""
        try:
            result, records = await self._run(runner, message, index, row)
            stored = await self._commits.store_row(
                RowWithRecords(
                    result,
                    [call_row(record) for record in records.calls],
                    [span_row(record) for record in records.spans],
                )
            )
            finished = not stored or result["status"] == "ok"
            ended = f"{index}:{result['status']}" if stored else ""
        finally:
            # A row that ended in an error is not marked done: resuming the run sends it again.
            await self._finish(
                keys=[run_key(run_id, "done", self.key_prefix), lease, run_key(run_id, "ended", self.key_prefix)],
                args=[index if finished else "", holder, RUN_KEYS_TTL_S, ended],
            )
        return RowOutcome("stored" if stored else "already_stored")

    async def _run(
        self, runner: BatchRunner, message: RowsMessage, index: int, row: dict[str, Any]
    ) -> tuple[dict[str, Any], _RowRecords]:
        with holding_records() as records:
            with join_run(
                trace_id=message.trace_id,
                span_id=message.run_span_id,
                run_id=message.run_id,
                budget_usd=message.budget_usd,
            ):
                result = await runner.run_row(index, row)
        return result, records

    async def _keep_leases(self, leases: list[str], holder: str, lease_ms: int) -> None:
        """Renew the delivery's leases until cancelled; a row's lease goes when its row ends."""
        while True:
            await asyncio.sleep(lease_ms / 3000.0)
            if not await self._renew(keys=leases, args=[holder, lease_ms]):
                return

    async def _report_problem(self, message: RowsMessage, problem: str) -> RowOutcome:
        logger.warning("run %s stopped by this worker: %s", message.run_id, problem)
        await self._redis.rpush(run_key(message.run_id, "problems", self.key_prefix), problem)
        return RowOutcome("refused", problem=problem)

    def _runner(self, message: RowsMessage) -> BatchRunner:
        """Return the runner of the message's run, built on first use and checked against the run."""
        # One build at a time: the first rows of a run arrive together, and
        # building imports the workflow's tool modules, which two threads
        # must not import at once.
        with self._building:
            return self._cached_runner(message)

    def _cached_runner(self, message: RowsMessage) -> BatchRunner:
        runner = self._runners.get(message.run_id)
        if runner is not None:
            self._runners.move_to_end(message.run_id)
            return runner
        try:
            get_run(self.store, message.run_id)
        except StoreError:
            raise ConfigError(
                f"a worker found no run {message.run_id} in its store {self.store.safe_url()}; "
                "give the run and every worker the same store (TRUNKLINE_DATABASE_URL)"
            ) from None
        spec = load_workflow(message.workflow_path)
        runner = BatchRunner(
            spec,
            router=self.router,
            store=self.store,
            writer=self.writer,
            params=message.params,
            prompt_overrides=message.prompt_overrides,
            budget_usd=message.budget_usd,
        )
        if settings_hash(self.settings) != message.settings_hash:
            raise ConfigError(
                f"the configuration of a worker (deployments, routes, prices, budgets or redaction in "
                f"its trunkline.toml) differs from the one run {message.run_id} started with; give "
                "every worker the run's trunkline.toml (TRUNKLINE_CONFIG names the file)"
            )
        if runner.workflow_hash != message.workflow_hash:
            raise ConfigError(
                f"the workflow files at {message.workflow_path} on a worker differ from those "
                f"run {message.run_id} started with; give every worker the same files"
            )
        runner.run_id = message.run_id
        self._runners[message.run_id] = runner
        if len(self._runners) > _CACHED_RUNS:
            self._runners.popitem(last=False)
        return runner
