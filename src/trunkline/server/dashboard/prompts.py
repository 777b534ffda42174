"""The prompt registry's pages: every prompt, one prompt's versions and labels, and diffs."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from trunkline.errors import ConfigError
from trunkline.prompts import LabelMove, PromptRegistry, PromptVersion, prompt_yaml
from trunkline.server.auth import require
from trunkline.server.dashboard import params
from trunkline.server.dashboard.params import NotFound, QueryError
from trunkline.server.dashboard.rendering import page_errors, render
from trunkline.store.database import Store
from trunkline.store.keys import ApiKey, Role

router = APIRouter(include_in_schema=False)
viewer = require(Role.VIEWER)

#: Versions are numbered from 1; this only keeps the number an integer the database can hold.
_MAX_VERSION = 2**31 - 1


@dataclass(frozen=True)
class PromptHistory:
    """A prompt's versions oldest first, where its labels point now, and every move of them."""

    name: str
    versions: list[PromptVersion]
    labels: dict[str, int]
    moves: list[LabelMove]


def load_history(store: Store, name: str) -> PromptHistory:
    """Read a prompt's versions, labels and label moves.

    Raises:
        NotFound: the registry has no prompt of that name.
    """
    registry = PromptRegistry(store)
    try:
        versions = registry.versions(name)
    except ConfigError as error:
        raise NotFound(str(error)) from None
    labels = {label: version.version for version in versions for label in version.labels}
    return PromptHistory(name, versions, labels, registry.label_history(name))


def diff_lines(old: PromptVersion, new: PromptVersion) -> list[str]:
    """Return the unified diff of two versions' YAML, as `trunkline prompts diff` prints it."""
    return list(
        difflib.unified_diff(
            prompt_yaml(old, with_version=False).splitlines(),
            prompt_yaml(new, with_version=False).splitlines(),
            fromfile=old.reference,
            tofile=new.reference,
            lineterm="",
        )
    )


def load_pair(
    store: Store, name: str, first: int, second: int
) -> tuple[PromptVersion, PromptVersion]:
    """Read versions `first` and `second` of a prompt.

    Raises:
        NotFound: the prompt or either version does not exist.
    """
    registry = PromptRegistry(store)
    try:
        return registry.get(f"{name}@{first}"), registry.get(f"{name}@{second}")
    except ConfigError as error:
        raise NotFound(str(error)) from None


def version_pair(query: Mapping[str, str]) -> tuple[int, int]:
    first = params.optional_integer(query, "a", minimum=1, maximum=_MAX_VERSION)
    second = params.optional_integer(query, "b", minimum=1, maximum=_MAX_VERSION)
    if first is None or second is None:
        missing = "a" if first is None else "b"
        raise QueryError(missing, "is missing; give two version numbers, as in ?a=1&b=2")
    return first, second


@router.get("/prompts", response_class=HTMLResponse)
@page_errors
def prompts_page(request: Request, key: ApiKey = Depends(viewer)) -> HTMLResponse:
    """Render every prompt with its latest version and its labels."""
    summaries = PromptRegistry(request.app.state.store).list()
    return render(request, "prompts.html", title="Prompts", summaries=summaries)


# Declared before the prompt page, whose path parameter would also match ".../diff".
# NOTE: so a prompt whose name ends in "/diff" has no page of its own here;
# `trunkline prompts show` still prints it.
@router.get("/prompts/{name:path}/diff", response_class=HTMLResponse)
@page_errors
def prompt_diff_page(name: str, request: Request, key: ApiKey = Depends(viewer)) -> HTMLResponse:
    """Render the unified diff of versions `a` and `b` of a prompt."""
    first, second = version_pair(request.query_params)
    old, new = load_pair(request.app.state.store, name, first, second)
    title = f"{name}: {first} → {second}"
    lines = diff_lines(old, new)
    return render(request, "prompt_diff.html", title=title, old=old, new=new, lines=lines)


@router.get("/prompts/{name:path}", response_class=HTMLResponse)
@page_errors
def prompt_page(name: str, request: Request, key: ApiKey = Depends(viewer)) -> HTMLResponse:
    """Render a prompt's versions, labels and label moves, and one version in full."""
    history = load_history(request.app.state.store, name)
    latest = history.versions[-1].version
    number = params.integer(request.query_params, "version", latest, minimum=1, maximum=_MAX_VERSION)
    selected = next((version for version in history.versions if version.version == number), None)
    if selected is None:
        # A 404, as for a missing version on the diff page.
        raise NotFound(f"prompt {name!r} has no version {number}; its versions are 1 to {latest}")
    return render(
        request,
        "prompt.html",
        title=name,
        history=history,
        shown=selected,
        text=prompt_yaml(selected),
    )
