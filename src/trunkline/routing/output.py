"""Structured output: the schema sent to the model and the check of what came back."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError


class OutputMismatch(ValueError):
    """The output text does not parse or does not match the schema."""


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
                f"got {type(schema).__name__}"
            )

    def parse(self, text: str) -> Any:
        """Return the validated value: a model instance, or the decoded JSON.

        Raises:
            OutputMismatch: with a message that can be sent back to the model.
        """
        if self.model is not None:
            try:
                return self.model.model_validate_json(text)
            except ValidationError as error:
                raise OutputMismatch(_summarise(error)) from error
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise OutputMismatch(f"output is not valid JSON: {error}") from error
        problems = sorted(self._validator.iter_errors(value), key=lambda item: list(item.path))
        if problems:
            where = "/".join(str(part) for part in problems[0].path) or "(root)"
            raise OutputMismatch(f"output does not match the schema at {where}: {problems[0].message}")
        return value


def _summarise(error: ValidationError) -> str:
    parts = []
    for problem in error.errors()[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "(root)"
        parts.append(f"{where}: {problem['msg']}")
    return "output does not match the schema: " + "; ".join(parts)
