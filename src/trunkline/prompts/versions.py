"""Prompt versions, their content hash, and references such as ``triage@3`` or ``triage:production``."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import jinja2
import jinja2.meta
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from trunkline.errors import ConfigError

#: Types a prompt variable may declare, checked when the prompt is rendered.
VariableType = Literal["string", "integer", "number", "boolean", "array", "object", "any"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-/]{0,199}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_LOOP = re.compile(r"^\s*([A-Za-z_]\w*)\s+in\s+(\S.*?)\s*$", re.DOTALL)


class ChatTemplate(BaseModel):
    """One message of a prompt: its role and a Jinja2 template for its content.

    With `for_each` (``example in examples``, or any Jinja2 expression after
    ``in``, such as ``examples | reverse``), the message repeats once per
    item of the list, with the item bound to the loop name.
    Consecutive messages with the same `for_each` repeat together, so a
    user and an assistant message make one few-shot turn per item.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str
    for_each: str | None = None

    @field_validator("for_each")
    @classmethod
    def _check_loop(cls, value: str | None) -> str | None:
        if value is not None:
            parse_loop(value)
        return value

    @model_serializer(mode="wrap")
    def _omit_unset_loop(self, handler: Any) -> Any:
        # Left out when unset, so that versions stored before loops existed keep their hash.
        data = handler(self)
        if isinstance(data, dict) and data.get("for_each") is None:
            data.pop("for_each", None)
        return data

    @property
    def loop(self) -> tuple[str, str] | None:
        """Return the loop's item name and list expression, or None."""
        return parse_loop(self.for_each) if self.for_each else None


def parse_loop(text: str) -> tuple[str, str]:
    """Split ``item in items`` into the item name and the list expression.

    Raises:
        ValueError: the text has another form, or the expression is not valid Jinja2.
    """
    match = _LOOP.match(text)
    if match is None:
        raise ValueError(
            f"for_each must read 'ITEM in LIST', such as 'example in examples'; got {text!r}"
        )
    try:
        jinja2.Environment(autoescape=False).parse("{{ " + match.group(2) + " }}")
    except jinja2.TemplateSyntaxError as error:
        raise ValueError(f"for_each {text!r}: the list after 'in' is not a valid expression: {error.message}") from None
    return match.group(1), match.group(2)


class PromptMetadata(BaseModel):
    """The descriptive fields of a prompt version: purpose, output format, known models and a note."""

    model_config = ConfigDict(extra="forbid")

    purpose: str = ""
    #: Such as ``text``, ``json`` or ``label``.
    output_format: str = ""
    #: Models the prompt is known to work with.
    models: list[str] = Field(default_factory=list)
    note: str = ""


class PromptContent(BaseModel):
    """Everything that defines a version: changing any of it makes a new version."""

    model_config = ConfigDict(extra="forbid")

    messages: list[ChatTemplate] = Field(min_length=1)
    #: Variable name to type; by default every variable the templates use, typed ``any``.
    variables: dict[str, VariableType] = Field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    metadata: PromptMetadata = Field(default_factory=PromptMetadata)

    @field_validator("variables", mode="before")
    @classmethod
    def _names_as_any(cls, value: Any) -> Any:
        # A plain list of names is accepted and means "any type".
        if isinstance(value, list) and all(isinstance(name, str) for name in value):
            return {name: "any" for name in value}
        return value

    @model_validator(mode="after")
    def _declare_used_variables(self) -> PromptContent:
        used = template_variables(self.messages)
        undeclared = sorted(used - set(self.variables))
        if self.variables and undeclared:
            raise ValueError(
                f"the templates use {', '.join(undeclared)}, which variables does not declare; "
                "declare them, or leave variables out to accept every variable the templates use"
            )
        if not self.variables:
            self.variables = {name: "any" for name in sorted(used)}
        return self

    def content_hash(self) -> str:
        """Return the SHA-256 of the content in a canonical JSON form."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class PromptVersion(BaseModel):
    """One immutable, numbered version of a named prompt."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: int
    content: PromptContent
    content_hash: str
    author: str | None = None
    created_at: datetime
    #: The version this one was derived from, or None.
    parent_version: int | None = None
    #: Labels pointing at this version when it was read.
    labels: tuple[str, ...] = ()

    @property
    def reference(self) -> str:
        return f"{self.name}@{self.version}"


def template_variables(messages: list[ChatTemplate]) -> set[str]:
    """Return the names every message template reads from its variables.

    Raises:
        ConfigError: a template is not valid Jinja2.
    """
    environment = jinja2.Environment(autoescape=False)
    names: set[str] = set()
    for index, message in enumerate(messages):
        try:
            parsed = environment.parse(message.content)
        except jinja2.TemplateSyntaxError as error:
            raise ConfigError(
                f"message {index + 1} ({message.role}) is not a valid Jinja2 template: "
                f"line {error.lineno}: {error.message}"
            ) from None
        used = jinja2.meta.find_undeclared_variables(parsed)
        if message.loop is not None:
            item, items = message.loop
            listed = jinja2.meta.find_undeclared_variables(environment.parse("{{ " + items + " }}"))
            used = (used - {item}) | listed
        names |= used
    return names


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ConfigError(
            f"prompt name {name!r} is invalid; use letters, digits, '_', '-', '.' and '/', "
            "starting with a letter or digit, up to 200 characters"
        )
    return name


def check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise ConfigError(
            f"label {label!r} is invalid; use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit, up to 100 characters"
        )
    return label


@dataclass(frozen=True)
class PromptReference:
    """A prompt named with an optional version (``name@3``) or label (``name:production``).

    With neither, it means the latest version.
    """

    name: str
    version: int | None = None
    label: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        if self.label is not None:
            return f"{self.name}:{self.label}"
        return self.name


def parse_reference(text: str) -> PromptReference:
    """Parse ``NAME``, ``NAME@VERSION`` or ``NAME:LABEL``.

    Raises:
        ConfigError: the text matches none of these forms.
    """
    if "@" in text:
        name, _, version = text.rpartition("@")
        if not version.isdigit() or int(version) < 1:
            raise ConfigError(
                f"prompt reference {text!r} has version {version!r}; a version is a whole "
                "number from 1, as in triage@3"
            )
        return PromptReference(check_name(name), version=int(version))
    if ":" in text:
        name, _, label = text.rpartition(":")
        return PromptReference(check_name(name), label=check_label(label))
    return PromptReference(check_name(text))
