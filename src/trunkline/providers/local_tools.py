"""Tool calls on the local model through grammar-constrained JSON.

A small GGUF model has no native tool-call format that llama-cpp-python
parses for every chat template. So the tools are described in a system
message, and the reply is constrained by a JSON Schema (which llama.cpp turns
into a grammar) to either ``{"answer": "..."}`` or ``{"tool_calls": [{"name":
..., "arguments": {...}}]}``, with each tool's own arguments schema.
Earlier tool calls and results are written back into the conversation as
plain messages, because chat templates such as SmolLM2's render only roles
and text.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from trunkline.types.calls import ModelRequest
from trunkline.types.messages import ToolCall, ToolDefinition, plain_messages


def uses_tools(request: ModelRequest) -> bool:
    """Return whether the reply must be constrained to an answer or tool calls."""
    return bool(request.tools) and request.tool_choice != "none"


def chat_messages(request: ModelRequest) -> list[dict[str, Any]]:
    """Return the conversation as plain role and text messages, with the tools described first."""
    messages = [
        {"role": message.role, "content": message.content}
        for message in plain_messages(request.messages)
    ]
    if uses_tools(request):
        messages.insert(0, {"role": "system", "content": _instructions(request)})
    return messages


def reply_schema(request: ModelRequest) -> dict[str, Any]:
    """Build the JSON Schema of a reply: an answer, tool calls, or either as `tool_choice` allows."""
    tools = list(request.tools)
    if request.tool_choice not in (None, "auto", "required"):
        tools = [tool for tool in tools if tool.name == request.tool_choice]
    definitions: dict[str, Any] = {}
    calls = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "minItems": 1,
                **({"maxItems": 1} if request.parallel_tool_calls is False else {}),
                "items": {"anyOf": [_call_schema(tool, definitions) for tool in tools]},
            }
        },
        "required": ["tool_calls"],
    }
    answer = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
    }
    schema: dict[str, Any] = calls if request.tool_choice not in (None, "auto") else {"anyOf": [answer, calls]}
    if definitions:
        schema = {**schema, "$defs": definitions}
    return schema


def parse_reply(text: str) -> tuple[str, tuple[ToolCall, ...]]:
    """Split a constrained reply into its answer text and its tool calls.

    A reply that is not the expected JSON, such as one the output cap cut
    off, is returned whole as the answer text.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text, ()
    if not isinstance(value, dict):
        return text, ()
    if isinstance(value.get("answer"), str):
        return value["answer"], ()
    calls = value.get("tool_calls")
    if not isinstance(calls, list):
        return text, ()
    return "", tuple(_tool_call(item) for item in calls if isinstance(item, dict))


def _tool_call(item: dict[str, Any]) -> ToolCall:
    # The model writes no call ids, and a tool message must name one.
    return ToolCall(
        id=f"call_{uuid.uuid4().hex[:12]}",
        name=str(item.get("name", "")),
        arguments=json.dumps(item.get("arguments", {})),
    )


def _call_schema(tool: ToolDefinition, definitions: dict[str, Any]) -> dict[str, Any]:
    arguments = dict(tool.parameters)
    # References point at the root's $defs, so nested ones move there.
    definitions.update(arguments.pop("$defs", {}))
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": arguments},
        "required": ["name", "arguments"],
    }


def _instructions(request: ModelRequest) -> str:
    tools = [
        {"name": tool.name, "description": tool.description, "parameters": tool.parameters}
        for tool in request.tools
    ]
    return (
        "You can call these tools:\n"
        f"{json.dumps(tools)}\n"
        'To call tools, reply {"tool_calls": [{"name": "<tool>", "arguments": {...}}]}. '
        'To answer, reply {"answer": "<your answer>"}.'
    )
