"""Prompts as YAML files in a folder: push them into the registry, pull them back out.

One file per prompt::

    name: triage                 # by default the file's path, without .yaml
    messages:
      - role: system
        content: You sort banking messages into intents.
      - role: user
        content: "{{ message }}"
    variables:                   # optional; name: type
      message: string
    output_schema: {...}         # optional JSON Schema
    metadata:
      purpose: intent triage
      output_format: label
      models: [smollm2-135m-instruct]
      note: first version

`version` may appear (`pull` writes it) and is ignored by `push`: the
registry numbers versions itself, and the same content is the same version.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from trunkline.errors import ConfigError, validation_problems
from trunkline.prompts.registry import PromptRegistry
from trunkline.prompts.versions import PromptContent, PromptVersion

SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Pushed:
    """A file pushed: the version it maps to, and whether that version is new."""

    path: Path
    version: PromptVersion
    created: bool


def read_prompt_file(path: Path, folder: Path) -> tuple[str, PromptContent]:
    """Read one prompt file; the name defaults to its path under `folder`, without the suffix.

    Raises:
        ConfigError: the file is not valid YAML or not a valid prompt, naming the file.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"prompt file {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prompt file {path} must be a mapping with messages; see docs/evaluation.md")
    data = dict(data)
    declared_name = data.pop("name", None)
    if declared_name is not None and not str(declared_name).strip():
        raise ConfigError(f"prompt file {path} has an empty name; give a name or leave the key out")
    name = str(declared_name) if declared_name is not None else path.relative_to(folder).with_suffix("").as_posix()
    data.pop("version", None)
    try:
        content = PromptContent.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"prompt file {path} is invalid: {validation_problems(error)}") from None
    except ConfigError as error:
        raise ConfigError(f"prompt file {path}: {error}") from None
    return name, content


def push(registry: PromptRegistry, folder: Path, *, author: str | None = None) -> list[Pushed]:
    """Add a version for each prompt file under `folder` whose content is new.

    Every file is read and checked before anything is written, so one bad
    file stops the push with nothing changed.

    Raises:
        ConfigError: the folder has no prompt files, a file is invalid, or two
            files name the same prompt.
    """
    if folder.is_file():
        raise ConfigError(f"{folder} is a file, not a folder; pass the folder that holds it")
    if not folder.is_dir():
        raise ConfigError(f"prompt folder {folder} not found; pass a folder of .yaml prompt files")
    files = sorted(path for path in folder.rglob("*") if path.suffix in SUFFIXES and path.is_file())
    if not files:
        raise ConfigError(f"no .yaml or .yml prompt files under {folder}")
    read: dict[str, tuple[Path, PromptContent]] = {}
    for path in files:
        name, content = read_prompt_file(path, folder)
        if name in read:
            raise ConfigError(f"prompt {name!r} is defined twice: in {read[name][0]} and in {path}")
        read[name] = (path, content)
    pushed = []
    for name, (path, content) in read.items():
        version, created = registry.create_version(name, content, author=author)
        pushed.append(Pushed(path, version, created))
    return pushed


def _literal_blocks(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(str, _literal_blocks)


def prompt_yaml(prompt: PromptVersion, *, with_version: bool = True) -> str:
    """Return the YAML text of a version, in the form `push` reads."""
    data: dict[str, Any] = {"name": prompt.name}
    if with_version:
        data["version"] = prompt.version
    content = prompt.content.model_dump(mode="json")
    data["messages"] = content["messages"]
    data["variables"] = content["variables"]
    if content["output_schema"] is not None:
        data["output_schema"] = content["output_schema"]
    data["metadata"] = content["metadata"]
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def pull(
    registry: PromptRegistry, folder: Path, *, label: str | None = None, names: list[str] | None = None
) -> list[Path]:
    """Write each prompt's latest version, or the one `label` points at, as a file under `folder`.

    Prompts without that label are skipped. Returns the files written.

    Raises:
        ConfigError: a prompt in `names` is not in the registry.
    """
    summaries = registry.list()
    missing = sorted(set(names or ()) - {summary.name for summary in summaries})
    if missing:
        raise ConfigError(f"no prompt named {', '.join(missing)}; list prompts with `trunkline prompts list`")
    written = []
    for summary in summaries:
        if names and summary.name not in names:
            continue
        if label is not None and label not in summary.labels:
            continue
        reference = f"{summary.name}:{label}" if label is not None else summary.name
        prompt = registry.get(reference)
        path = folder / f"{prompt.name}.yaml"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(prompt_yaml(prompt), encoding="utf-8")
        except OSError as error:
            raise ConfigError(
                f"cannot write {path}: {error.strerror or error}; pull into a folder you can write to"
                + (f" ({len(written)} files were written before this one)" if written else "")
            ) from None
        written.append(path)
    return written
