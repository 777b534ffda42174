"""The smallest JSON value that a JSON Schema accepts, for simulated structured output."""

from __future__ import annotations

from typing import Any

#: Nesting depth past which objects and arrays are left empty, against recursive schemas.
MAX_DEPTH = 8


def minimal_instance(schema: dict[str, Any], root: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """Return a small value that `schema` accepts: the first enum value, required fields only, zeros.

    It follows local ``$ref`` pointers, takes the first branch of
    ``anyOf``/``oneOf`` that is not null, and honours ``const``, minimums,
    ``minLength`` and ``minItems``. Patterns and formats are not generated,
    so a schema with them may reject the value.
    """
    root = root if root is not None else schema
    if "$ref" in schema:
        return minimal_instance(_resolve(schema["$ref"], root), root, depth)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            branches = [branch for branch in schema[key] if branch.get("type") != "null"]
            return minimal_instance((branches or schema[key])[0], root, depth)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((item for item in kind if item != "null"), "null")
    if kind == "object":
        if depth >= MAX_DEPTH:
            return {}
        properties = schema.get("properties", {})
        return {
            name: minimal_instance(properties.get(name, {}), root, depth + 1)
            for name in schema.get("required", [])
        }
    if kind == "array":
        count = schema.get("minItems", 0) if depth < MAX_DEPTH else 0
        return [minimal_instance(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "x" * int(schema.get("minLength", 0))


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 0
    if "minimum" in schema:
        value = max(value, schema["minimum"]) if "maximum" not in schema else schema["minimum"]
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        value = schema["exclusiveMinimum"] + 1
    if "maximum" in schema and value > schema["maximum"]:
        value = schema["maximum"]
    return int(value) if integer else value


def _resolve(reference: str, root: dict[str, Any]) -> dict[str, Any]:
    if not reference.startswith("#/"):
        raise ValueError(f"only local $ref pointers such as #/$defs/Name are supported, got {reference!r}")
    node: Any = root
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node
