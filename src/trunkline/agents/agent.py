"""The agent loop: call the model with tools, run the tool calls it requests, send back the results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from trunkline.agents.events import (
    AgentEvent,
    AgentFinished,
    StepStarted,
    TextDelta,
    ToolCallFinished,
    ToolCallsRequested,
)
from trunkline.agents.execution import ToolRunner, tool_message
from trunkline.agents.results import AgentResult, AgentSummary, StopReason, ToolCallResult
from trunkline.errors import BudgetExceeded, CallError, ConfigError
from trunkline.ids import random_hex
from trunkline.routing import Router
from trunkline.routing.active import active_router
from trunkline.routing.output import OutputMismatch, OutputSpec
from trunkline.tools import Tool
from trunkline.tracing import LiveSpan, span
from trunkline.types.calls import CallRecord, ToolChoice
from trunkline.types.messages import Message, plain_messages

logger = logging.getLogger(__name__)

MessagesInput = str | Sequence[Message | Mapping[str, Any]]


class Agent:
    """A model that calls tools in a loop until it replies without tool calls or a bound stops it.

    Each step sends the conversation and the tool definitions through the
    router, so retries, fallbacks, rate limits and budgets apply to every
    model call. The tool calls of a step run in parallel, at most
    `max_parallel_tools` at a time, and each failure (an unknown tool,
    arguments that are not JSON or do not validate, an exception, a
    timeout) goes back to the model as a tool error it can recover from.

    Args:
        router: the router that sends the model calls.
        tools: `Tool` objects, or typed functions to build them from.
        route: the route of every model call; by default the router's.
        instructions: a system message put before the conversation.
        name: the agent's name in spans and logs.
        max_steps: model calls the run may make.
        max_tool_calls: tool calls the run may make; a step whose calls
            would pass it is not run.
        max_tool_errors: failed tool calls the run tolerates; one more stops it.
        max_parallel_tools: tool calls of one step that run at the same time.
        tool_timeout_s: seconds a tool call may run, unless its tool sets its own.
        deadline_s: seconds the whole run may take, or None.
        budget_usd: what the run's model calls may spend together, or None.
            The router refuses a call whose worst-case cost would pass it.
        tool_choice: ``auto``, ``none``, ``required`` or a tool name. A
            forced choice (``required`` or a name) applies until the model
            has called a tool, then the loop sends ``auto`` so that the
            model can answer; None leaves it to the provider.
        output: a Pydantic model or JSON Schema the answer must match. An
            answer that does not is sent back once more without tools, with
            the schema, and the router validates and repairs that reply as
            it does any structured output.
        parallel_tool_calls: False requests at most one tool call a step,
            which helps models that request the same call several times
            at once; None leaves the provider's default.
        allow_repeated_calls: run a tool call again when the run already
            made it with the same arguments. False sends the earlier result
            back as a ``repeated_call`` tool error, which stops small models
            that call one tool over and over.
        record_tool_content: keep tool arguments and results on the tool
            spans, with secrets redacted; False keeps only their lengths.
        call_options: more keyword arguments for `Router.complete`, such as
            ``temperature`` or ``max_tokens``.

    Example::

        agent = Agent(router, [weather], instructions="Answer briefly.")
        result = await agent.run("Is it warmer in Paris or in Oslo?")
        print(result.output, result.summary.stop_reason)
    """

    def __init__(
        self,
        router: Router,
        tools: Sequence[Tool | Callable[..., Any]] = (),
        *,
        route: str | None = None,
        instructions: str | None = None,
        name: str = "agent",
        max_steps: int = 10,
        max_tool_calls: int = 32,
        max_tool_errors: int = 8,
        max_parallel_tools: int = 4,
        tool_timeout_s: float = 60.0,
        deadline_s: float | None = None,
        budget_usd: float | None = None,
        tool_choice: ToolChoice | None = None,
        output: type[BaseModel] | dict[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        allow_repeated_calls: bool = True,
        record_tool_content: bool = True,
        call_options: Mapping[str, Any] | None = None,
    ) -> None:
        _check_count("max_steps", max_steps, minimum=1)
        _check_count("max_tool_calls", max_tool_calls, minimum=0)
        _check_count("max_tool_errors", max_tool_errors, minimum=0)
        _check_count("max_parallel_tools", max_parallel_tools, minimum=1)
        _check_seconds("tool_timeout_s", tool_timeout_s)
        if deadline_s is not None:
            _check_seconds("deadline_s", deadline_s)
        if budget_usd is not None and not (math.isfinite(budget_usd) and budget_usd > 0):
            raise ConfigError(f"budget_usd must be a finite amount above 0 USD, got {budget_usd!r}")
        reserved = {"tools", "tool_choice", "parallel_tool_calls", "route", "budgets", "output"} & set(
            call_options or {}
        )
        if reserved:
            raise ConfigError(
                f"call_options cannot set {', '.join(sorted(reserved))}; pass them to Agent instead"
            )
        self.router = router
        self.tools = _tools_by_name(tools)
        self.route = route
        self.instructions = instructions
        self.name = name
        self.max_steps = max_steps
        self.max_tool_calls = max_tool_calls
        self.max_tool_errors = max_tool_errors
        self.max_parallel_tools = max_parallel_tools
        self.tool_timeout_s = tool_timeout_s
        self.deadline_s = deadline_s
        self.budget_usd = budget_usd
        self.tool_choice = tool_choice
        self.output = output
        try:
            self.output_spec = OutputSpec(output) if output is not None else None
        except TypeError as error:
            raise ConfigError(f"output: {error}") from None
        self.parallel_tool_calls = parallel_tool_calls
        self.allow_repeated_calls = allow_repeated_calls
        self.record_tool_content = record_tool_content
        self.call_options = dict(call_options or {})

    async def run(self, messages: MessagesInput, *, tags: Mapping[str, str] | None = None) -> AgentResult:
        """Run the loop on `messages` and return the answer, the conversation and the summary.

        Bounds never raise: the result's ``summary.stop_reason`` says which
        one stopped the run. A model call that fails after the router's
        retries and fallbacks stops it too, with stop reason ``call_failed``.

        Raises:
            ConfigError: the route or a call option is invalid.
        """
        run = _AgentRun(self, _to_messages(messages), dict(tags or {}))
        await self._drive(run)
        return run.result()

    async def stream(
        self, messages: MessagesInput, *, tags: Mapping[str, str] | None = None
    ) -> AsyncIterator[AgentEvent]:
        """Run the loop on `messages`, yielding its events as they happen; the last is `AgentFinished`.

        Each step's model call is streamed, so its text arrives as
        `TextDelta` events, then the tool calls it requests and each tool
        result as its call ends. The structured answer's extra call, when
        the output schema needs one, is not streamed. Leaving the loop
        early cancels the run, and its model call is recorded as cancelled.

        Example::

            async for event in agent.stream("Is it warmer in Paris or in Oslo?"):
                if isinstance(event, TextDelta):
                    print(event.text, end="")
        """
        queue: asyncio.Queue[AgentEvent | None] = asyncio.Queue()
        run = _AgentRun(self, _to_messages(messages), dict(tags or {}), emit=queue.put_nowait)

        async def drive() -> None:
            try:
                await self._drive(run)
            finally:
                queue.put_nowait(None)

        task = asyncio.create_task(drive())
        try:
            while (event := await queue.get()) is not None:
                yield event
            await task
            yield AgentFinished(run.result())
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _drive(self, run: _AgentRun) -> None:
        token = active_router.set(self.router)
        try:
            with span(f"invoke_agent {self.name}", "agent", **{"gen_ai.agent.name": self.name}) as live:
                await run.loop()
                run.finish(live)
        finally:
            active_router.reset(token)

    def run_sync(self, messages: MessagesInput, **options: Any) -> AgentResult:
        """Run `run` to the end from synchronous code; not from inside an event loop."""
        return asyncio.run(self.run(messages, **options))


class _AgentRun:
    """The state of one run of the loop."""

    def __init__(
        self,
        agent: Agent,
        messages: list[Message],
        tags: dict[str, str],
        emit: Callable[[AgentEvent], None] | None = None,
    ) -> None:
        self.agent = agent
        self.tags = tags
        #: Receives the run's events when it is streamed; None when it is not.
        self.emit = emit
        prefix = [Message.system(agent.instructions)] if agent.instructions else []
        self.conversation: list[Message] = [*prefix, *messages]
        self.calls: list[CallRecord] = []
        self.tool_results: list[ToolCallResult] = []
        self.summary = AgentSummary(stop_reason="answered")
        self.output = ""
        self.parsed: Any = None
        self.tool_choice = agent.tool_choice
        self.error: str | None = None
        self.clock = time.perf_counter()
        self.deadline = (
            None if agent.deadline_s is None else asyncio.get_running_loop().time() + agent.deadline_s
        )
        # A scope of its own in the router's budget ledger, so the limit
        # covers this run's calls and no other run's.
        self.budgets = {f"agent:{random_hex()}": agent.budget_usd} if agent.budget_usd else {}
        self.runner = ToolRunner(
            agent.tools,
            timeout_s=agent.tool_timeout_s,
            max_parallel=agent.max_parallel_tools,
            record_content=agent.record_tool_content,
            allow_repeats=agent.allow_repeated_calls,
        )

    async def loop(self) -> None:
        for step in range(1, self.agent.max_steps + 1):
            self.summary.steps = step
            if self.emit is not None:
                self.emit(StepStarted(step))
            with span(f"agent step {step}", "step", step=step) as live:
                reason = await self._step(step, live)
            if reason is not None:
                self.summary.stop_reason = reason
                return

    async def _step(self, step: int, live: LiveSpan) -> StopReason | None:
        """Make one model call and run the tool calls it requests; return a stop reason or None."""
        reason = await self._call_model(step)
        if reason is not None:
            live.fail(self.error or reason)
            return reason
        calls = self.conversation[-1].tool_calls
        live.attributes["tool_calls"] = len(calls)
        if calls and self.emit is not None:
            self.emit(ToolCallsRequested(step, calls))
        if not calls:
            reason = await self._structured_answer()
            if reason != "answered":
                live.fail(self.error or reason)
            return reason
        if self.tool_choice not in (None, "auto", "none"):
            # A forced choice would make every later step call a tool too, so
            # the loop could only end at a bound.
            self.tool_choice = "auto"
        if step == self.agent.max_steps:
            return "max_steps"
        if self.summary.tool_call_count + len(calls) > self.agent.max_tool_calls:
            return "max_tool_calls"

        scope = asyncio.timeout_at(self.deadline)
        try:
            async with scope:
                results = await self.runner.run_all(calls, step, self._tool_finished(step))
        except TimeoutError:
            if not scope.expired():
                raise
            live.fail("the agent's deadline passed while its tools ran")
            return "deadline"
        for result in results:
            self.tool_results.append(result)
            self.summary.add_tool_call(result)
            self.conversation.append(tool_message(result))
        if sum(self.summary.tool_errors.values()) > self.agent.max_tool_errors:
            return "max_tool_errors"
        return None

    def _tool_finished(self, step: int) -> Callable[[ToolCallResult], None] | None:
        emit = self.emit
        if emit is None:
            return None
        return lambda result: emit(ToolCallFinished(step, result))

    async def _call_model(self, step: int) -> StopReason | None:
        # A tool whose uses are spent is no longer offered, so a model that
        # keeps calling it must turn to another tool or answer.
        offered = [tool.definition for tool in self.runner.available()]
        if not offered and self.agent.output_spec is not None:
            # With no tool left to call, the reply can only be the answer, so
            # it is asked for in the schema at once instead of checked after.
            return await self._ask_in_schema()
        result, reason = await self._complete(
            self.conversation,
            stream_step=step if self.emit is not None else None,
            tools=offered,
            tool_choice=self.tool_choice if offered else None,
            parallel_tool_calls=self.agent.parallel_tool_calls if offered else None,
        )
        if result is None:
            return reason
        # The output, not the record's text, which has secrets redacted for storage.
        self.output = result.output
        self.conversation.append(
            Message(role="assistant", content=self.output, tool_calls=result.tool_calls)
        )
        return None

    async def _structured_answer(self) -> StopReason:
        """Check the answer against the output schema; ask once more, without tools, if it fails."""
        spec = self.agent.output_spec
        if spec is None or self.parsed is not None:
            return "answered"
        try:
            self.parsed = spec.check_text(self.output, self.calls[-1].finish_reason)
            return "answered"
        except OutputMismatch as mismatch:
            request = Message.user(
                f"Your answer does not match the required format ({mismatch}). Give the same "
                "answer again as JSON only."
            )
        self.conversation.append(request)
        return await self._ask_in_schema() or "answered"

    async def _ask_in_schema(self) -> StopReason | None:
        """Ask for the answer in the output schema, without tools; return a stop reason if that fails."""
        # Anthropic rejects tool blocks in the history of a request without
        # tools, so this call carries the tool calls and results as text.
        result, reason = await self._complete(
            plain_messages(self.conversation), output=self.agent.output
        )
        if result is None:
            return "invalid_output" if reason == "call_failed" and self._invalid_output() else reason
        self.parsed = result.output
        if isinstance(self.parsed, BaseModel):
            self.output = self.parsed.model_dump_json()
        else:
            self.output = json.dumps(self.parsed, ensure_ascii=False)
        self.conversation.append(Message.assistant(self.output))
        return None

    async def _stream(self, messages: list[Message], step: int, options: dict[str, Any]) -> Any:
        assert self.emit is not None
        async with self.agent.router.stream(messages, **options) as stream:
            async for delta in stream:
                self.emit(TextDelta(step, delta))
        return stream.result

    def _invalid_output(self) -> bool:
        validation = self.calls[-1].validation if self.calls else None
        return validation is not None and not validation.valid

    async def _complete(
        self, messages: list[Message], stream_step: int | None = None, **options: Any
    ) -> tuple[Any, StopReason | None]:
        """Make one model call, streamed for `stream_step`; return its result, or None and the stop reason."""
        agent = self.agent
        options = {
            "route": agent.route, "budgets": self.budgets, "tags": self.tags or None, **options, **agent.call_options
        }
        # Only this scope's expiry is the deadline; any other TimeoutError is a fault to raise.
        scope = asyncio.timeout_at(self.deadline)
        try:
            async with scope:
                if stream_step is None:
                    result = await agent.router.complete(messages, **options)
                else:
                    result = await self._stream(messages, stream_step, options)
        except TimeoutError:
            if not scope.expired():
                raise
            self.error = "the agent's deadline passed during a model call"
            return None, "deadline"
        except CallError as error:
            record = getattr(error, "record", None)
            if record is not None:
                self._add_call(record)
            self.error = str(error)
            return None, "budget" if isinstance(error, BudgetExceeded) else "call_failed"
        self._add_call(result.record)
        return result, None

    def _add_call(self, record: CallRecord) -> None:
        self.calls.append(record)
        self.summary.add_call(record)

    def finish(self, live: LiveSpan) -> None:
        summary = self.summary
        summary.duration_ms = (time.perf_counter() - self.clock) * 1000.0
        live.attributes.update(
            stop_reason=summary.stop_reason,
            steps=summary.steps,
            model_calls=summary.model_calls,
            tool_calls=summary.tool_call_count,
            tool_calls_by_tool=json.dumps(summary.by_tool()),
            input_tokens=summary.input_tokens,
            output_tokens=summary.output_tokens,
            cost_usd=summary.cost_usd,
        )
        if summary.stop_reason != "answered":
            live.fail(f"stopped by {summary.stop_reason}" + (f": {self.error}" if self.error else ""))
            logger.warning(
                "agent %s stopped by %s after %d steps and %d tool calls",
                self.agent.name, summary.stop_reason, summary.steps, summary.tool_call_count,
            )

    def result(self) -> AgentResult:
        return AgentResult(
            output=self.output,
            parsed=self.parsed,
            messages=list(self.conversation),
            calls=self.calls,
            tool_results=self.tool_results,
            summary=self.summary,
            error=self.error,
        )


def _tools_by_name(tools: Sequence[Tool | Callable[..., Any]]) -> dict[str, Tool]:
    if isinstance(tools, Tool) or callable(tools) or isinstance(tools, str):
        raise ConfigError(f"tools must be a list of tools or functions, got {tools!r}; wrap it as [{tools!r}]")
    by_name: dict[str, Tool] = {}
    for item in tools:
        if isinstance(item, str):
            raise ConfigError(
                f"tool {item!r} is a string; pass the function or Tool, or load_tool({item!r}) for an import path"
            )
        built = item if isinstance(item, Tool) else Tool(item)
        if built.name in by_name:
            raise ConfigError(f"two tools are named {built.name!r}; pass name= to tell them apart")
        by_name[built.name] = built
    return by_name


def _to_messages(messages: MessagesInput) -> list[Message]:
    if isinstance(messages, str):
        return [Message.user(messages)]
    return [item if isinstance(item, Message) else Message.model_validate(item) for item in messages]


def _check_count(name: str, value: int, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be a whole number of {minimum} or more, got {value!r}")


def _check_seconds(name: str, value: float) -> None:
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a finite number of seconds above 0, got {value!r}")
