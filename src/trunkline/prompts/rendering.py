"""Rendering a prompt version into chat messages, with its variables checked first."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jinja2

from trunkline.errors import ConfigError
from trunkline.prompts.versions import ChatTemplate, PromptVersion
from trunkline.types.messages import Message

_CHECKS: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list, tuple),
    "object": (dict,),
}

_environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def check_variables(prompt: PromptVersion, values: dict[str, Any]) -> None:
    """Check that every declared variable is given and of its declared type.

    Raises:
        ConfigError: naming the prompt, its version and the variable.
    """
    for name, kind in prompt.content.variables.items():
        if name not in values:
            names_given = ", ".join(sorted(values)) or "none"
            raise ConfigError(
                f"prompt {prompt.reference} needs variable {name!r}, which was not given; "
                f"given: {names_given}"
            )
        expected = _CHECKS.get(kind)
        value = values[name]
        # bool is an int in Python, but not a number a prompt means.
        wrong_bool = isinstance(value, bool) and kind in ("integer", "number")
        if expected is not None and (not isinstance(value, expected) or wrong_bool):
            raise ConfigError(
                f"prompt {prompt.reference} declares variable {name!r} as {kind}, but it is "
                f"{type(value).__name__} {value!r:.60}; convert it, or change the declared type"
            )


def render(prompt: PromptVersion, values: dict[str, Any]) -> list[Message]:
    """Return the prompt's messages with `values` filled in.

    Raises:
        ConfigError: a variable is missing or of the wrong type, or a template
            fails, naming the prompt, its version and the variable.
    """
    check_variables(prompt, values)
    messages: list[Message] = []
    templates = list(enumerate(prompt.content.messages))
    position = 0
    while position < len(templates):
        index, message = templates[position]
        if message.loop is None:
            messages.append(_render_one(prompt, index, message, values))
            position += 1
            continue
        # Consecutive messages with the same loop repeat together, item by item.
        group = [templates[position]]
        while position + len(group) < len(templates) and templates[position + len(group)][1].for_each == message.for_each:
            group.append(templates[position + len(group)])
        item, items = message.loop
        try:
            sequence = _environment.compile_expression(items, undefined_to_none=False)(**values)
        except jinja2.TemplateError as error:
            raise ConfigError(
                f"prompt {prompt.reference}, message {index + 1} ({message.role}): the list "
                f"{items!r} of its for_each failed to evaluate: {error}"
            ) from None
        if isinstance(sequence, Iterator):
            sequence = list(sequence)
        if not isinstance(sequence, (list, tuple)):
            raise ConfigError(
                f"prompt {prompt.reference}, message {index + 1} ({message.role}) repeats for each "
                f"item of {items!r}, which must be a list; got {type(sequence).__name__}"
            )
        for element in sequence:
            scope = {**values, item: element}
            messages.extend(_render_one(prompt, number, template, scope) for number, template in group)
        position += len(group)
    return messages


def _render_one(prompt: PromptVersion, index: int, message: ChatTemplate, values: dict[str, Any]) -> Message:
    try:
        text = _environment.from_string(message.content).render(**values)
    except jinja2.UndefinedError as error:
        raise ConfigError(
            f"prompt {prompt.reference}, message {index + 1} ({message.role}): {error.message}; "
            f"given: {', '.join(sorted(values)) or 'none'}"
        ) from None
    except jinja2.TemplateError as error:
        raise ConfigError(
            f"prompt {prompt.reference}, message {index + 1} ({message.role}) failed to "
            f"render: {error}"
        ) from None
    return Message(role=message.role, content=text.strip())
