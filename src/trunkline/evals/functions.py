"""A scorer that calls a Python function named by its import path, ``package.module:function``."""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy

from trunkline.errors import ConfigError, WorkflowError
from trunkline.evals.scores import Score, ScoringError, preview, run_to_end
from trunkline.workflows.loading import load_object


def import_function(path: str, folder: Path | None = None) -> Callable[..., Any]:
    """Import the callable that `path` names as ``module:attribute``.

    The attribute may be dotted (``package.module:Class.method``). With
    `folder`, the module is first looked for as a file there, as a
    workflow's own tools are.

    Raises:
        ConfigError: `path` is malformed, the module cannot be imported, or
            the attribute is missing or not callable.
    """
    module_name, colon, attribute = path.partition(":")
    if not colon or not module_name or not attribute:
        raise ConfigError(
            f"scorer function path {path!r} is invalid; write it as 'package.module:function'"
        )
    if folder is not None:
        try:
            target: Any = load_object(path, folder)
        except WorkflowError as error:
            raise ConfigError(f"scorer function {path!r} cannot be loaded: {error}") from None
        return _callable(target, path)
    try:
        target = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"cannot import module {module_name!r} for scorer function {path!r}: {error}"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                f"scorer function {path!r} not found: {module_name!r} has no attribute "
                f"{attribute!r}"
            ) from None
    return _callable(target, path)


def _callable(target: Any, path: str) -> Callable[..., Any]:
    if not callable(target):
        raise ConfigError(
            f"scorer function {path!r} is a {type(target).__name__}, not a callable"
        )
    return cast(Callable[..., Any], target)


class FunctionScorer:
    """Scores with ``function(output, expected, row)``, imported from `path`.

    The function returns a `Score`, a bool (True is 1.0) or a real number
    from 0 to 1. It may be a coroutine function: then `ascore` awaits it and
    calling the scorer runs it on a new event loop.

    Raises:
        ConfigError: on construction, when `path` does not name a callable.
        ScoringError: on scoring, when the function returns anything else;
            the message names the function and the value.
    """

    def __init__(self, path: str, folder: Path | None = None) -> None:
        self.path = path
        self.function = import_function(path, folder)
        self.name = f"python:{path}"
        self._is_async = inspect.iscoroutinefunction(self.function)

    def __repr__(self) -> str:
        return f"<FunctionScorer {self.path!r}>"

    def __call__(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Call the function and convert its return; async functions run on a new event loop."""
        if self._is_async:
            return run_to_end(lambda: self.ascore(output, expected, row), self.name)
        return self._to_score(self.function(output, expected, dict(row or {})))

    async def ascore(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Call or await the function and convert its return."""
        result = self.function(output, expected, dict(row or {}))
        if self._is_async:
            result = await result
        return self._to_score(result)

    def _to_score(self, result: Any) -> Score:
        if isinstance(result, Score):
            return result
        # numpy.bool_ is no subclass of bool, yet functions that compare arrays return it.
        if isinstance(result, bool | numpy.bool_):
            return Score(1.0 if result else 0.0)
        if isinstance(result, numbers.Real) and 0.0 <= float(result) <= 1.0:
            return Score(float(result))
        raise ScoringError(
            f"scorer function {self.path!r} returned {preview(result)} of type "
            f"{type(result).__name__}; it must return a number from 0 to 1, a bool or a Score"
        )
