"""Tools built from typed functions: schemas, argument checks, results and loading by path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from trunkline.errors import ConfigError, ToolError, ToolErrorKind, WorkflowError
from trunkline.tools import Tool, load_tool, tool
from trunkline.tools.docstrings import parse_docstring


class Place(BaseModel):
    city: str
    country: str | None = None


class Forecast(BaseModel):
    city: str
    celsius: float


def forecast(place: Place, days: int = 1, unit: Literal["C", "F"] = "C") -> Forecast:
    """Forecast the weather somewhere.

    Uses the cached forecasts only.

    Args:
        place: where to look, a city
            and optionally its country.
        days (int): how many days ahead.
        unit: the temperature scale.

    Returns:
        The forecast.
    """
    return Forecast(city=place.city, celsius=20.0 + days)


async def slow_sum(numbers: list[int]) -> int:
    """Add numbers up."""
    return sum(numbers)


def test_definition_from_signature_and_docstring() -> None:
    definition = Tool(forecast).definition
    parameters = definition.parameters

    assert definition.name == "forecast"
    assert definition.description == "Forecast the weather somewhere.\n\nUses the cached forecasts only."
    assert parameters["type"] == "object"
    assert parameters["required"] == ["place"]
    assert parameters["additionalProperties"] is False
    assert parameters["properties"]["place"]["description"] == (
        "where to look, a city and optionally its country."
    )
    assert parameters["properties"]["days"]["description"] == "how many days ahead."
    assert parameters["properties"]["days"]["default"] == 1
    assert parameters["properties"]["unit"]["enum"] == ["C", "F"]
    assert "Place" in parameters["$defs"]
    assert "title" not in parameters


def test_function_without_parameters() -> None:
    def now() -> str:
        return "noon"

    parameters = Tool(now).definition.parameters
    assert parameters["properties"] == {}
    assert "required" not in parameters


def test_decorator_options() -> None:
    @tool(name="sum_all", description="Sum a list.", timeout_s=2.5)
    async def add_up(numbers: list[int]) -> int:
        return sum(numbers)

    assert isinstance(add_up, Tool)
    assert add_up.name == "sum_all"
    assert add_up.description == "Sum a list."
    assert add_up.timeout_s == 2.5
    assert add_up.is_async


def test_bare_decorator() -> None:
    decorated = tool(slow_sum)
    assert decorated.name == "slow_sum"
    assert decorated.description == "Add numbers up."


def test_arguments_validated() -> None:
    arguments = Tool(forecast).parse_arguments('{"place": {"city": "Oslo"}, "days": "3"}')
    assert arguments.place == Place(city="Oslo")
    assert arguments.days == 3
    assert arguments.unit == "C"


@pytest.mark.parametrize(
    ("arguments", "kind", "fragment"),
    [
        ('{"place": ', ToolErrorKind.ARGUMENTS_NOT_JSON, "not valid JSON"),
        ('["Oslo"]', ToolErrorKind.ARGUMENTS_NOT_JSON, "must be a JSON object, got list"),
        ("{}", ToolErrorKind.INVALID_ARGUMENTS, "place: Field required"),
        ('{"place": {"city": "Oslo"}, "unit": "K"}', ToolErrorKind.INVALID_ARGUMENTS, "unit:"),
        ('{"place": {"city": "Oslo"}, "day": 2}', ToolErrorKind.INVALID_ARGUMENTS, "day: Extra inputs"),
    ],
)
def test_bad_arguments_rejected(arguments: str, kind: ToolErrorKind, fragment: str) -> None:
    with pytest.raises(ToolError) as caught:
        Tool(forecast).parse_arguments(arguments)
    assert caught.value.kind == kind
    assert caught.value.tool == "forecast"
    assert fragment in str(caught.value)


def test_empty_arguments_mean_no_arguments() -> None:
    def now() -> str:
        return "noon"

    arguments = Tool(now).parse_arguments("  ")
    assert type(arguments).model_fields == {}


async def test_sync_call_and_serialised_result() -> None:
    weather = Tool(forecast)
    value = await weather.call(weather.parse_arguments('{"place": {"city": "Oslo"}, "days": 2}'))

    assert value == Forecast(city="Oslo", celsius=22.0)
    assert json.loads(weather.serialise(value)) == {"city": "Oslo", "celsius": 22.0}


async def test_async_call() -> None:
    adder = Tool(slow_sum)
    value = await adder.call(adder.parse_arguments('{"numbers": [1, 2, 3]}'))

    assert value == 6
    assert adder.serialise(value) == "6"


async def test_text_result_sent_as_is() -> None:
    def greet(name: str) -> str:
        return f'Hello "{name}"'

    greeter = Tool(greet)
    value = await greeter.call(greeter.parse_arguments('{"name": "Ada"}'))
    assert greeter.serialise(value) == 'Hello "Ada"'


async def test_result_checked_against_annotation() -> None:
    def count(word: str) -> int:
        return "many"  # type: ignore[return-value]

    counter = Tool(count)
    with pytest.raises(ToolError) as caught:
        await counter.call(counter.parse_arguments('{"word": "a"}'))
    assert caught.value.kind == ToolErrorKind.INVALID_RESULT
    assert "does not match its return type" in str(caught.value)


async def test_exception_becomes_tool_error() -> None:
    async def explode(reason: str) -> None:
        raise RuntimeError(reason)

    exploder = Tool(explode)
    with pytest.raises(ToolError) as caught:
        await exploder.call(exploder.parse_arguments('{"reason": "disk full"}'))
    assert caught.value.kind == ToolErrorKind.EXCEPTION
    assert str(caught.value) == "explode raised RuntimeError: disk full"
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_unannotated_parameter_rejected() -> None:
    def loose(value) -> str:  # noqa: ANN001
        return str(value)

    with pytest.raises(ConfigError, match="parameter 'value' of tool 'loose' has no type annotation"):
        Tool(loose)


def test_variadic_parameters_rejected() -> None:
    def spread(*values: int) -> int:
        return sum(values)

    with pytest.raises(ConfigError, match="is variadic"):
        Tool(spread)


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dots.not.allowed"])
def test_invalid_names_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match="tool name"):
        Tool(slow_sum, name=name)


def test_invalid_timeout_rejected() -> None:
    with pytest.raises(ConfigError, match="timeout_s of tool 'slow_sum'"):
        Tool(slow_sum, timeout_s=0)


def test_load_tool_from_file(tmp_path: Path) -> None:
    (tmp_path / "weather_tools.py").write_text(
        textwrap.dedent(
            '''
            from __future__ import annotations

            from trunkline.tools import tool


            def celsius(fahrenheit: float) -> float:
                """Convert Fahrenheit to Celsius.

                Args:
                    fahrenheit: the temperature in degrees Fahrenheit.
                """
                return (fahrenheit - 32) * 5 / 9


            @tool(name="kelvin_from_celsius")
            def kelvin(celsius: float) -> float:
                return celsius + 273.15
            '''
        )
    )

    plain = load_tool("weather_tools:celsius", tmp_path)
    decorated = load_tool("weather_tools:kelvin", tmp_path)

    assert plain.name == "celsius"
    assert plain.definition.parameters["properties"]["fahrenheit"]["type"] == "number"
    assert plain.definition.parameters["properties"]["fahrenheit"]["description"] == (
        "the temperature in degrees Fahrenheit."
    )
    assert decorated.name == "kelvin_from_celsius"


def test_load_tool_from_installed_module() -> None:
    loaded = load_tool("trunkline.tools.docstrings:parse_docstring")
    assert loaded.name == "parse_docstring"
    assert loaded.definition.parameters["required"] == ["text"]


def test_load_tool_rejects_missing_and_non_callable(tmp_path: Path) -> None:
    (tmp_path / "settings_module.py").write_text("LIMIT = 3\n")

    with pytest.raises(WorkflowError, match="has no attribute"):
        load_tool("settings_module:missing", tmp_path)
    with pytest.raises(ConfigError, match="is a int, not a function"):
        load_tool("settings_module:LIMIT", tmp_path)
    with pytest.raises(WorkflowError, match="expected module:attribute"):
        load_tool("no_colon", tmp_path)


def test_docstring_sections() -> None:
    parsed = parse_docstring(
        "Do a thing.\n\nArgs:\n    first: one\n        more.\n    second (str): two.\n\nRaises:\n    ValueError: never.\n"
    )
    assert parsed.summary == "Do a thing."
    assert parsed.parameters == {"first": "one more.", "second": "two."}
