"""Tools: typed Python functions that a model may call.

The JSON Schema of a tool's arguments comes from a Pydantic model built from
the function's signature, and the descriptions from its Google-style
docstring. The same model validates the arguments the model sends, and a
`TypeAdapter` over the return annotation validates and serialises the result.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model

from trunkline.errors import ConfigError, ToolError, ToolErrorKind, validation_problems
from trunkline.tools.docstrings import parse_docstring
from trunkline.types.messages import ToolDefinition

#: The name pattern that both OpenAI and Anthropic accept for a tool.
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
MAX_NAME_CHARS = 64


class Tool:
    """A typed function, sync or async, that a model may call by name.

    Args:
        function: the function; every parameter needs a type annotation.
        name: the name the model calls it by; by default the function's name.
        description: what the tool does, for the model; by default the
            docstring's text before its first section.
        timeout_s: seconds a call may run before it is cancelled and
            reported to the model as timed out; None for the agent's default.
        max_uses: successful calls an agent run may make; once they are
            made, the agent stops offering the tool. None for no limit.

    Raises:
        ConfigError: a parameter has no annotation, is variadic, or the
            name is not one that providers accept.

    Example::

        def weather(city: str, unit: Literal["C", "F"] = "C") -> float:
            \"\"\"Return the temperature now in a city.

            Args:
                city: the city's name, such as "Paris".
                unit: the temperature scale.
            \"\"\"

        tool = Tool(weather)
        tool.definition.parameters["required"]  # ["city"]
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout_s: float | None = None,
        max_uses: int | None = None,
    ) -> None:
        self.function = function
        self.name = function.__name__ if name is None else name
        _check_name(self.name)
        if timeout_s is not None and (
            isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not timeout_s > 0
        ):
            raise ConfigError(f"timeout_s of tool {self.name!r} must be a number of seconds above 0, got {timeout_s!r}")
        self.timeout_s = timeout_s
        if max_uses is not None and (isinstance(max_uses, bool) or not isinstance(max_uses, int) or max_uses < 1):
            raise ConfigError(f"max_uses of tool {self.name!r} must be a whole number of 1 or more, got {max_uses!r}")
        self.max_uses = max_uses
        docstring = parse_docstring(inspect.getdoc(function) or "")
        self.description = description if description is not None else docstring.summary
        signature = _signature(function, self.name)
        self.arguments_model = _arguments_model(self.name, signature, docstring.parameters)
        returns = signature.return_annotation
        self._returns_text = returns is str
        self.result_adapter: TypeAdapter[Any] = TypeAdapter(
            Any if returns is inspect.Signature.empty else returns
        )
        self.is_async = inspect.iscoroutinefunction(function)
        self.definition = ToolDefinition(
            name=self.name, description=self.description, parameters=_parameters_schema(self.arguments_model)
        )

    def __repr__(self) -> str:
        return f"Tool({self.name!r})"

    def parse_arguments(self, arguments: str) -> BaseModel:
        """Decode and validate the model's JSON arguments.

        Raises:
            ToolError: with kind arguments_not_json or invalid_arguments, and
                a message that shows the model what to send instead.
        """
        try:
            value = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as error:
            raise ToolError(
                f"the arguments for {self.name} are not valid JSON ({error}); "
                "send a JSON object of the parameters",
                kind=ToolErrorKind.ARGUMENTS_NOT_JSON,
                tool=self.name,
            ) from error
        if not isinstance(value, dict):
            raise ToolError(
                f"the arguments for {self.name} must be a JSON object, got {type(value).__name__}",
                kind=ToolErrorKind.ARGUMENTS_NOT_JSON,
                tool=self.name,
            )
        try:
            return self.arguments_model.model_validate(value)
        except ValidationError as error:
            raise ToolError(
                f"invalid arguments for {self.name}: {validation_problems(error)}; "
                "correct them to match the tool's parameters",
                kind=ToolErrorKind.INVALID_ARGUMENTS,
                tool=self.name,
            ) from error

    async def call(self, arguments: BaseModel) -> Any:
        """Run the function with validated `arguments` and return its validated result.

        A sync function runs on a worker thread, so it does not hold up the
        event loop. Cancelling the call cannot stop that thread, which runs
        on to its end.

        Raises:
            ToolError: with kind exception or invalid_result.
        """
        values = {name: getattr(arguments, name) for name in type(arguments).model_fields}
        try:
            if self.is_async:
                result = await self.function(**values)
            else:
                result = await asyncio.to_thread(self.function, **values)
        except ToolError:
            raise
        except Exception as error:
            raise ToolError(
                f"{self.name} raised {type(error).__name__}: {error}",
                kind=ToolErrorKind.EXCEPTION,
                tool=self.name,
            ) from error
        return self.validate_result(result)

    def validate_result(self, result: Any) -> Any:
        """Check `result` against the return annotation and return the validated value."""
        try:
            return self.result_adapter.validate_python(result)
        except ValidationError as error:
            raise ToolError(
                f"{self.name} returned a value that does not match its return type: "
                f"{validation_problems(error)}",
                kind=ToolErrorKind.INVALID_RESULT,
                tool=self.name,
            ) from error

    def serialise(self, result: Any) -> str:
        """Return the result as the text of a tool message: a string as it is, anything else as JSON."""
        if self._returns_text or isinstance(result, str):
            return str(result)
        return self.result_adapter.dump_json(result).decode()


@overload
def tool(function: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    max_uses: int | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float | None = None,
    max_uses: int | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Turn a function into a `Tool`, as ``@tool`` or ``@tool(name=..., timeout_s=..., max_uses=...)``."""
    if function is not None:
        return Tool(function)

    def decorate(target: Callable[..., Any]) -> Tool:
        return Tool(target, name=name, description=description, timeout_s=timeout_s, max_uses=max_uses)

    return decorate


def load_tool(reference: str, folder: Path | None = None) -> Tool:
    """Load the tool that ``module:function`` names, as a workflow file names it.

    The module is looked for as ``module.py`` in `folder` (by default the
    working folder), then imported as an installed module. The attribute
    may be a `Tool` or a plain function.

    Raises:
        WorkflowError: the module or attribute cannot be found.
        ConfigError: the attribute is not callable, or not a valid tool.
    """
    # Imported here because workflows build on routing and tracing, which
    # this module does not otherwise need.
    from trunkline.workflows.loading import load_object

    target = load_object(reference, folder or Path.cwd())
    if isinstance(target, Tool):
        return target
    if not callable(target):
        raise ConfigError(
            f"{reference!r} is a {type(target).__name__}, not a function; "
            "name a function or a Tool as module:function"
        )
    return Tool(target)


def _check_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_CHARS or not set(name) <= _NAME_CHARACTERS:
        raise ConfigError(
            f"tool name {name!r} is invalid: use 1 to {MAX_NAME_CHARS} letters, digits, "
            "underscores or hyphens, or pass name= to choose another"
        )


def _arguments_model(
    tool_name: str, signature: inspect.Signature, descriptions: dict[str, str]
) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for parameter in signature.parameters.values():
        where = f"parameter {parameter.name!r} of tool {tool_name!r}"
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ConfigError(f"{where} is variadic; a tool takes named parameters only")
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise ConfigError(f"{where} is positional-only; a tool's arguments arrive by name")
        if parameter.name.startswith("_") or (parameter.name.startswith("model_") and hasattr(BaseModel, parameter.name)):
            raise ConfigError(f"{where} has a name that Pydantic reserves; rename the parameter")
        if parameter.annotation is inspect.Parameter.empty:
            raise ConfigError(f"{where} has no type annotation; annotate it so the model knows what to send")
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (
            parameter.annotation,
            Field(default, description=descriptions.get(parameter.name)),
        )
    # Extra arguments are rejected, so a misspelt optional parameter is reported, not ignored.
    config = ConfigDict(extra="forbid")
    try:
        return create_model(f"{tool_name}_arguments", __config__=config, **fields)
    except (TypeError, NameError) as error:
        raise ConfigError(f"the parameters of tool {tool_name!r} cannot be described: {error}") from error


def _signature(function: Callable[..., Any], tool_name: str) -> inspect.Signature:
    """Read the signature with string annotations, as ``from __future__ import annotations`` leaves them, resolved."""
    try:
        return inspect.signature(function, eval_str=True)
    except NameError as error:
        raise ConfigError(f"an annotation of tool {tool_name!r} cannot be resolved: {error}") from error


def _parameters_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    # The generated title names the Python class, which means nothing to the model.
    schema.pop("title", None)
    schema.setdefault("properties", {})
    return schema
