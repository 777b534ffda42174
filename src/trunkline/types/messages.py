"""Chat messages in the provider-neutral shape."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(BaseModel):
    """A function call that the model asked for."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    #: The arguments as the model produced them, JSON text that may be invalid.
    arguments: str

    def input_object(self) -> dict[str, Any]:
        """Decode the arguments for a ``tool_use`` block, which takes an object, not JSON text.

        Arguments that are not a JSON object, which the model may have produced
        on another provider, are returned under ``arguments`` so the turn stays valid.
        """
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except json.JSONDecodeError:
            return {"arguments": self.arguments}
        return value if isinstance(value, dict) else {"arguments": value}


class ToolDefinition(BaseModel):
    """A tool the model may call: its name, what it does and the JSON Schema of its arguments."""

    model_config = ConfigDict(frozen=True)

    name: str
    description: str = ""
    #: JSON Schema of the arguments object.
    parameters: dict[str, Any]
    #: OpenAI's strict mode for the arguments, sent to OpenAI only; None leaves it unset.
    strict: bool | None = None

    def to_openai(self) -> dict[str, Any]:
        """Return the definition as an entry of OpenAI's ``tools`` list."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        if self.strict is not None:
            function["strict"] = self.strict
        return {"type": "function", "function": function}

    def to_anthropic(self) -> dict[str, Any]:
        """Return the definition as an entry of Anthropic's ``tools`` list."""
        definition: dict[str, Any] = {"name": self.name, "input_schema": self.parameters}
        if self.description:
            definition["description"] = self.description
        return definition


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Role
    content: str
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    #: For a tool message: the tool failed, and `content` describes the failure.
    is_error: bool = False

    @classmethod
    def system(cls, content: str) -> Message:
        return cls(role="system", content=content)

    @classmethod
    def user(cls, content: str) -> Message:
        return cls(role="user", content=content)

    @classmethod
    def assistant(cls, content: str) -> Message:
        return cls(role="assistant", content=content)

    @classmethod
    def tool(cls, tool_call_id: str, content: str, *, is_error: bool = False) -> Message:
        """Build the message that returns the result of the tool call `tool_call_id`."""
        return cls(role="tool", content=content, tool_call_id=tool_call_id, is_error=is_error)

    def to_openai(self) -> dict[str, Any]:
        """Return the message in the OpenAI chat-completions wire shape."""
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            data["name"] = self.name
        if self.tool_call_id:
            data["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            data["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.tool_calls
            ]
        return data


def plain_messages(messages: Sequence[Message]) -> list[Message]:
    """Write tool calls and tool results as plain assistant and user text.

    For a request that must not carry tool blocks: a chat template that
    renders only roles and text, or a call sent without tools, which
    providers reject when the history holds tool blocks.
    """
    names = {call.id: call.name for message in messages for call in message.tool_calls}
    return [_plain(message, names) for message in messages]


def _plain(message: Message, names: dict[str, str]) -> Message:
    if message.role == "tool":
        name = names.get(message.tool_call_id or "", "the tool")
        outcome = "failed" if message.is_error else "returned"
        return Message.user(f"{name} {outcome}: {message.content}")
    if message.role == "assistant" and message.tool_calls:
        calls = [{"name": call.name, "arguments": _arguments(call)} for call in message.tool_calls]
        return Message.assistant(json.dumps({"tool_calls": calls}))
    return Message(role=message.role, content=message.content, name=message.name)


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.arguments)
    except json.JSONDecodeError:
        return call.arguments
