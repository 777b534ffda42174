"""Tool definitions and tool choices of gateway requests, read from the OpenAI and Anthropic shapes.

The request models take ``tools`` and ``tool_choice`` as plain JSON, and
these functions check them. Each problem gets one 400 response that names
the field, what was expected, what came and how to fix it. Validating the
same JSON with a pydantic union would report one error per branch.
"""

from __future__ import annotations

import json
import re
from typing import Any

from trunkline.server.errors import ApiError
from trunkline.types.calls import ToolChoice
from trunkline.types.messages import ToolDefinition

#: Tool names that both OpenAI and Anthropic accept.
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NAME_RULE = "a name of 1 to 64 letters, digits, underscores or hyphens"
#: OpenAI's default when a function has no ``parameters``: an object without properties.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
_OPENAI_MODES = ("auto", "none", "required")
#: Anthropic's tool_choice types, by the router's tool choice they mean.
_ANTHROPIC_MODES = {"auto": "auto", "any": "required", "none": "none"}
#: The value of a field that the request left out, which differs from JSON null.
_MISSING = object()


def invalid(param: str, expected: str, value: Any, fix: str) -> ApiError:
    """Build the 400 for `param`, which should have been `expected` but was `value`."""
    return ApiError(
        400,
        "invalid_request",
        f"{param} must be {expected}, got {describe(value)}; {fix}",
        param=param,
    )


def describe(value: Any) -> str:
    """Describe a JSON value in an error message, cut to a readable length."""
    if value is _MISSING:
        return "nothing (the field is missing)"
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def openai_tools(tools: list[Any]) -> tuple[ToolDefinition, ...]:
    """Read OpenAI's ``tools``: entries of type ``function`` with a name and a parameters object."""
    definitions = []
    for index, entry in enumerate(tools):
        where = f"tools[{index}]"
        kind = entry.get("type", _MISSING) if isinstance(entry, dict) else _MISSING
        if kind != "function":
            raise invalid(
                f"{where}.type",
                '"function"',
                kind,
                'send each tool as {"type": "function", "function": {"name", "description", "parameters"}}',
            )
        function = entry.get("function", _MISSING)
        if not isinstance(function, dict):
            raise invalid(
                f"{where}.function",
                "an object with name, description and parameters",
                function,
                "describe the function under the key function",
            )
        definitions.append(_definition(f"{where}.function", function, "parameters", _NO_PARAMETERS))
    _check_unique(definitions)
    return tuple(definitions)


def anthropic_tools(tools: list[Any]) -> tuple[ToolDefinition, ...]:
    """Read Anthropic's ``tools``: client tools with a name and an input_schema object."""
    definitions = []
    for index, entry in enumerate(tools):
        where = f"tools[{index}]"
        if not isinstance(entry, dict):
            raise invalid(
                where,
                "an object with name, description and input_schema",
                entry,
                "send each tool as an object",
            )
        kind = entry.get("type", "custom")
        if kind != "custom":
            raise invalid(
                f"{where}.type",
                '"custom" or no type',
                kind,
                "Anthropic's server tools are not forwarded by this gateway; define the tool with an input_schema",
            )
        definitions.append(_definition(where, entry, "input_schema", _MISSING))
    _check_unique(definitions)
    return tuple(definitions)


def _definition(
    where: str, entry: dict[str, Any], schema_field: str, default: Any
) -> ToolDefinition:
    name = entry.get("name", _MISSING)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise invalid(f"{where}.name", _NAME_RULE, name, "give every tool such a name")
    description = entry.get("description") or ""
    if not isinstance(description, str) or not _is_unicode(description):
        raise invalid(
            f"{where}.description",
            "a string of valid Unicode",
            description,
            "send the description as text, or leave it out",
        )
    schema = entry.get(schema_field, default)
    # Both APIs take a tool's arguments as one JSON object.
    not_object = isinstance(schema, dict) and schema.get("type", "object") != "object"
    if not isinstance(schema, dict) or not_object or not _is_unicode(json.dumps(schema, ensure_ascii=False)):
        raise invalid(
            f"{where}.{schema_field}",
            "a JSON Schema object",
            schema,
            'describe the arguments as {"type": "object", "properties": {...}}',
        )
    strict = entry.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(
            f"{where}.strict", "true or false", strict, "send a boolean or leave strict out"
        )
    return ToolDefinition(name=name, description=description, parameters=schema, strict=strict)


def _is_unicode(text: str) -> bool:
    # A lone UTF-16 surrogate decodes from JSON but no provider SDK can encode it.
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_unique(definitions: list[ToolDefinition]) -> None:
    names = [definition.name for definition in definitions]
    for index, name in enumerate(names):
        if name in names[:index]:
            raise ApiError(
                400,
                "invalid_request",
                f"tools[{index}].name {name!r} is the name of an earlier tool too; tool names must be unique",
                param=f"tools[{index}].name",
            )


def openai_tool_choice(value: Any, tools: tuple[ToolDefinition, ...]) -> ToolChoice | None:
    """Read OpenAI's ``tool_choice``: a mode, or the function the model must call."""
    if value is None:
        return None
    if isinstance(value, str) and value in _OPENAI_MODES:
        return _checked_choice(value, tools)
    function = (
        value.get("function")
        if isinstance(value, dict) and value.get("type") == "function"
        else None
    )
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise invalid(
            "tool_choice",
            '"auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
            value,
            "send one of these forms",
        )
    return _checked_choice(name, tools)


def anthropic_tool_choice(value: Any, tools: tuple[ToolDefinition, ...]) -> ToolChoice | None:
    """Read Anthropic's ``tool_choice``: ``{"type": "auto" | "any" | "none" | "tool", "name"}``."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in _ANTHROPIC_MODES:
        return _checked_choice(_ANTHROPIC_MODES[kind], tools)
    name = value.get("name") if kind == "tool" else None
    if not isinstance(name, str):
        raise invalid(
            "tool_choice",
            'an object of type "auto", "any" or "none", or {"type": "tool", "name": ...}',
            value,
            "send one of these forms",
        )
    return _checked_choice(name, tools)


def anthropic_parallel_tool_calls(value: Any) -> bool | None:
    """Read ``disable_parallel_tool_use`` from Anthropic's ``tool_choice``: True gives False."""
    disable = value.get("disable_parallel_tool_use") if isinstance(value, dict) else None
    if disable is None:
        return None
    if not isinstance(disable, bool):
        raise invalid(
            "tool_choice.disable_parallel_tool_use", "true or false", disable, "send a JSON boolean"
        )
    return False if disable else None


def _checked_choice(choice: str, tools: tuple[ToolDefinition, ...]) -> ToolChoice:
    if not tools:
        raise ApiError(
            400,
            "invalid_request",
            f"tool_choice {choice!r} was sent without tools; send the tools too, or leave tool_choice out",
            param="tool_choice",
        )
    names = [tool.name for tool in tools]
    if choice in _OPENAI_MODES or choice in names:
        return choice
    raise ApiError(
        400,
        "invalid_request",
        f"tool_choice names the tool {choice!r}, which is not in tools ({', '.join(names)}); "
        "name one of those tools, or add the tool to tools",
        param="tool_choice",
    )
