"""Reading a tool's description and parameter descriptions from a Google-style docstring."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: Headers that end the summary; only ``Args:`` is read for parameters.
_SECTIONS = frozenset(
    {"args", "arguments", "parameters", "returns", "return", "raises", "yields", "example", "examples", "note", "notes"}
)
_PARAMETER_SECTIONS = frozenset({"args", "arguments", "parameters"})
# ``name: text`` or ``name (type): text``.
_PARAMETER_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


@dataclass
class Docstring:
    """The parts of a docstring that describe a tool."""

    #: The text before the first section, paragraphs kept.
    summary: str = ""
    #: Parameter name to its description, with continuation lines joined.
    parameters: dict[str, str] = field(default_factory=dict)


def parse_docstring(text: str) -> Docstring:
    """Split a cleaned docstring (`inspect.getdoc`) into its summary and ``Args:`` descriptions."""
    result = Docstring()
    summary: list[str] = []
    section: str | None = None
    current: str | None = None
    indent: int | None = None
    for line in text.splitlines():
        header = line.strip().rstrip(":").lower()
        if line.strip().endswith(":") and header in _SECTIONS and not line.startswith(" "):
            section, current, indent = header, None, None
            continue
        if section is None:
            summary.append(line)
        elif section in _PARAMETER_SECTIONS and line.strip():
            current, indent = _read_parameter_line(line, result.parameters, current, indent)
    result.summary = "\n".join(summary).strip()
    return result


def _read_parameter_line(
    line: str, parameters: dict[str, str], current: str | None, indent: int | None
) -> tuple[str | None, int | None]:
    """Add a parameter's first line, or a continuation of the current one, to `parameters`."""
    depth = len(line) - len(line.lstrip())
    match = _PARAMETER_LINE.match(line.strip())
    if match and (indent is None or depth <= indent):
        name = match.group(1).lstrip("*")
        parameters[name] = match.group(2).strip()
        return name, depth
    if current is not None:
        parameters[current] = f"{parameters[current]} {line.strip()}".strip()
    return current, indent
