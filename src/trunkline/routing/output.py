"""Structured output: the schema sent to the model and the check of what came back."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from trunkline.errors import ErrorKind
from trunkline.types.calls import ModelResponse


class OutputMismatch(ValueError):
    """The output is empty, cut short, not JSON, or does not match the schema.

    `kind` tells which, so that each is recorded under its own error kind.
    """

    def __init__(self, message: str, kind: ErrorKind = ErrorKind.INVALID_OUTPUT) -> None:
        super().__init__(message)
        self.kind = kind


def check_tool_arguments(response: ModelResponse) -> None:
    """Raise `OutputMismatch` when a tool call's arguments are not a JSON object."""
    for call in response.tool_calls:
        try:
            value = json.loads(call.arguments) if call.arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise OutputMismatch(
                f"arguments of tool call {call.name!r} are not valid JSON: {error}",
                ErrorKind.INVALID_TOOL_ARGUMENTS,
            ) from error
        if not isinstance(value, dict):
            raise OutputMismatch(
                f"arguments of tool call {call.name!r} must be a JSON object, "
                f"got {type(value).__name__}",
                ErrorKind.INVALID_TOOL_ARGUMENTS,
            )


class OutputSpec:
    """An output schema given as a Pydantic model class or a JSON Schema dict."""

    def __init__(self, schema: type[BaseModel] | dict[str, Any]) -> None:
        if isinstance(schema, dict):
            jsonschema.Draft202012Validator.check_schema(schema)
            self.model: type[BaseModel] | None = None
            self.json_schema = schema
            self._validator = jsonschema.Draft202012Validator(schema)
        elif isinstance(schema, type) and issubclass(schema, BaseModel):
            self.model = schema
            self.json_schema = schema.model_json_schema()
        else:
            raise TypeError(
                "output schema must be a pydantic BaseModel subclass or a JSON Schema dict, "
                f"got {schema.__name__ if isinstance(schema, type) else type(schema).__name__}"
            )

    def instructions(self) -> str:
        """Return the prompt text that requests this schema where no native mode is used."""
        return (
            "Reply with only a JSON value, no prose and no code fence, that matches this "
            f"JSON Schema:\n{json.dumps(self.json_schema, separators=(',', ':'))}"
        )

    def check(self, response: ModelResponse) -> Any:
        """Validate a whole response: not cut short, not empty, then the schema."""
        return self.check_text(response.text, response.finish_reason)

    def check_text(self, text: str, finish_reason: str | None = None) -> Any:
        """Validate a reply's text and why it ended, as `check` validates a response."""
        if finish_reason == "length":
            raise OutputMismatch(
                "output was cut by the max_tokens limit before it was complete",
                ErrorKind.OUTPUT_TRUNCATED,
            )
        if not text.strip():
            raise OutputMismatch("output is empty; a JSON value was required", ErrorKind.EMPTY_OUTPUT)
        text = text.strip()
        try:
            return self.parse(text)
        except OutputMismatch:
            # Prompted models often wrap the JSON in a code fence or a sentence,
            # so the JSON inside is checked, and its problem is the one reported.
            embedded = _embedded_json(text)
            if embedded is None or embedded == text:
                raise
        return self.parse(embedded)

    def parse(self, text: str) -> Any:
        """Return the validated value: a model instance, or the decoded JSON.

        Raises:
            OutputMismatch: with a message that can be sent back to the model.
        """
        if self.model is not None:
            try:
                return self.model.model_validate_json(text)
            except ValidationError as error:
                if not _raw_control_character(error):
                    raise OutputMismatch(_summarise(error)) from error
            try:
                return self.model.model_validate(_lenient_json(text))
            except ValidationError as error:
                raise OutputMismatch(_summarise(error)) from error
        value = _lenient_json(text)
        problems = sorted(self._validator.iter_errors(value), key=lambda item: list(item.path))
        if problems:
            where = "/".join(str(part) for part in problems[0].path) or "(root)"
            raise OutputMismatch(f"output does not match the schema at {where}: {problems[0].message}")
        return value


def _lenient_json(text: str) -> Any:
    try:
        # Small models put raw newlines and tabs inside JSON strings; reading them as
        # the characters they are loses nothing.
        return json.loads(text, strict=False)
    except json.JSONDecodeError as error:
        raise OutputMismatch(f"output is not valid JSON: {error}") from error


def _raw_control_character(error: ValidationError) -> bool:
    """Tell whether Pydantic's JSON parser failed only on a raw control character in a string."""
    return any(
        item["type"] == "json_invalid" and "control character" in item.get("ctx", {}).get("error", "")
        for item in error.errors()
    )


_FENCE = re.compile(r"```[\w+-]*[ \t]*\n?(.*?)```", re.DOTALL)


def _embedded_json(text: str) -> str | None:
    """Return the JSON inside a Markdown code fence, or between the first and last brace."""
    fenced = _FENCE.search(text)
    if fenced is not None:
        return fenced.group(1).strip()
    starts = [index for index in (text.find("{"), text.find("[")) if index != -1]
    if not starts:
        return None
    start = min(starts)
    end = text.rfind("}" if text[start] == "{" else "]")
    return text[start : end + 1] if end > start else None


def _summarise(error: ValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "(root)"
        parts.append(f"{where}: {problem['msg']}")
    return "output does not match the schema: " + "; ".join(parts)
