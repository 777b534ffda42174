"""Running the tool calls of one step, in parallel up to a bound, each in its own span."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel

from trunkline.agents.results import ToolCallResult
from trunkline.errors import ToolError, ToolErrorKind
from trunkline.redaction import redact
from trunkline.tools import Tool
from trunkline.tracing import LiveSpan, span
from trunkline.types.messages import Message, ToolCall

#: Maximum characters of arguments or of a result kept on a tool span; the rest is cut off.
MAX_SPAN_TEXT_CHARS = 4000


class ToolRunner:
    """Runs tool calls by name and turns every failure into a `ToolCallResult` with its kind.

    Args:
        tools: the agent's tools by name.
        timeout_s: seconds a call may run when its tool sets no timeout.
        max_parallel: calls of one step that run at the same time.
        record_content: keep the arguments and the result on each span
            (secrets redacted); False keeps only their lengths.
        allow_repeats: run a call again when the run already made it with
            the same arguments; False returns a `repeated_call` error.
    """

    def __init__(
        self,
        tools: Mapping[str, Tool],
        *,
        timeout_s: float,
        max_parallel: int,
        record_content: bool,
        allow_repeats: bool = True,
    ) -> None:
        self.tools = tools
        self.timeout_s = timeout_s
        self.record_content = record_content
        self.allow_repeats = allow_repeats
        self._slots = asyncio.Semaphore(max_parallel)
        #: Tool name and canonical arguments of each call made, to its result
        #: text, or None while the call runs.
        self._made: dict[tuple[str, str], str | None] = {}
        #: Calls per tool that succeeded or are running, against `Tool.max_uses`.
        self._uses: Counter[str] = Counter()

    def available(self) -> list[Tool]:
        """Return the tools that can still be called: those with uses left."""
        return [
            tool for tool in self.tools.values() if tool.max_uses is None or self._uses[tool.name] < tool.max_uses
        ]

    async def run_all(
        self,
        calls: Sequence[ToolCall],
        step: int,
        on_result: Callable[[ToolCallResult], None] | None = None,
    ) -> list[ToolCallResult]:
        """Run `calls` and return their results in the order the model asked for them.

        `on_result` receives each result as its call ends, in the order they end.
        """
        return list(await asyncio.gather(*(self._run_queued(call, step, on_result) for call in calls)))

    async def _run_queued(
        self, call: ToolCall, step: int, on_result: Callable[[ToolCallResult], None] | None
    ) -> ToolCallResult:
        async with self._slots:
            with span(
                f"execute_tool {call.name}",
                "tool",
                **{"gen_ai.tool.name": call.name, "gen_ai.tool.call.id": call.id, "step": step},
            ) as live:
                result = await self._run(call, step)
                self._record(live, result)
        if on_result is not None:
            on_result(result)
        return result

    async def _run(self, call: ToolCall, step: int) -> ToolCallResult:
        started = time.perf_counter()
        error: ToolError | None = None
        content = ""
        try:
            content = await self._call(call)
        except ToolError as failure:
            error = failure
        return ToolCallResult(
            call_id=call.id,
            tool=call.name,
            arguments=call.arguments,
            content=content if error is None else f"error: {error}",
            outcome="ok" if error is None else "error",
            error_kind=error.kind if error is not None else None,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            step=step,
        )

    async def _call(self, call: ToolCall) -> str:
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            raise ToolError(
                f"there is no tool named {call.name!r}; the tools are: {known}",
                kind=ToolErrorKind.UNKNOWN_TOOL,
                tool=call.name,
            )
        arguments = tool.parse_arguments(call.arguments)
        if tool.max_uses is not None:
            if self._uses[tool.name] >= tool.max_uses:
                raise ToolError(
                    f"{tool.name} may be called {tool.max_uses} time(s) in a run, and that is used up; "
                    "use the results you have: call another tool or answer",
                    kind=ToolErrorKind.USED_UP,
                    tool=tool.name,
                )
            self._uses[tool.name] += 1
        try:
            return await self._call_once(tool, arguments)
        except ToolError:
            # Only a successful call uses up a use, so a failed one may be tried again.
            if tool.max_uses is not None:
                self._uses[tool.name] -= 1
            raise

    async def _call_once(self, tool: Tool, arguments: BaseModel) -> str:
        if self.allow_repeats:
            return await self._call_tool(tool, arguments)
        key = (tool.name, json.dumps(arguments.model_dump(mode="json"), sort_keys=True))
        self._check_repeat(key)
        self._made[key] = None
        try:
            text = await self._call_tool(tool, arguments)
        except ToolError:
            # A failed call may be tried again with the same arguments.
            self._made.pop(key, None)
            raise
        self._made[key] = text
        return text

    def _check_repeat(self, key: tuple[str, str]) -> None:
        if key not in self._made:
            return
        name = key[0]
        earlier = self._made[key]
        where = (
            "in this step; its result is in the other tool message"
            if earlier is None
            else f"and returned: {earlier}"
        )
        raise ToolError(
            f"{name} was already called with these arguments {where}. "
            "Use that result: call another tool or answer",
            kind=ToolErrorKind.REPEATED_CALL,
            tool=name,
        )

    async def _call_tool(self, tool: Tool, arguments: BaseModel) -> str:
        timeout_s = tool.timeout_s or self.timeout_s
        try:
            # Only this block's own expiry becomes TimeoutError here; the
            # agent's deadline cancels the whole step and passes through.
            async with asyncio.timeout(timeout_s):
                value = await tool.call(arguments)
        except TimeoutError as error:
            raise ToolError(
                f"{tool.name} did not finish within {timeout_s:g} s and was cancelled",
                kind=ToolErrorKind.TIMEOUT,
                tool=tool.name,
            ) from error
        return tool.serialise(value)

    def _record(self, live: LiveSpan, result: ToolCallResult) -> None:
        live.attributes.update(
            outcome=result.outcome,
            error_kind=result.error_kind.value if result.error_kind else None,
            duration_ms=result.duration_ms,
        )
        if self.record_content:
            live.attributes["gen_ai.tool.call.arguments"] = _span_text(result.arguments)
            live.attributes["gen_ai.tool.call.result"] = _span_text(result.content)
        else:
            live.attributes["arguments_chars"] = len(result.arguments)
            live.attributes["result_chars"] = len(result.content)
        if result.outcome == "error":
            live.fail(result.content)


def tool_message(result: ToolCallResult) -> Message:
    """Build the tool message that returns `result` to the model."""
    return Message.tool(result.call_id, result.content, is_error=result.outcome == "error")


def _span_text(text: str) -> str:
    text = redact(text)
    if len(text) <= MAX_SPAN_TEXT_CHARS:
        return text
    return f"{text[:MAX_SPAN_TEXT_CHARS]}... [{len(text) - MAX_SPAN_TEXT_CHARS} more characters]"
