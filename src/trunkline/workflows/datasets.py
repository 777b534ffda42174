"""Datasets: rows of inputs from CSV or JSONL, with a content hash."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trunkline.errors import WorkflowError


@dataclass(frozen=True)
class Dataset:
    """Rows read from one file; `content_hash` is the SHA-256 of the file's bytes."""

    path: Path
    rows: list[dict[str, Any]]
    content_hash: str

    @property
    def columns(self) -> list[str]:
        return list(self.rows[0]) if self.rows else []


def load_dataset(path: Path | str) -> Dataset:
    """Read a ``.csv`` (with a header row) or ``.jsonl`` (one JSON object a line) file.

    Raises:
        WorkflowError: the file is missing, empty, of another type, or a line
            of a JSONL file is not a JSON object.
    """
    file = Path(path)
    if not file.is_file():
        raise WorkflowError(f"dataset {file} not found; pass an existing .csv or .jsonl file")
    raw = file.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise WorkflowError(
            f"dataset {file} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from error
    suffix = file.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(text, file)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _read_jsonl(text, file)
    else:
        raise WorkflowError(f"dataset {file} has type {suffix!r}; expected .csv or .jsonl")
    if not rows:
        raise WorkflowError(f"dataset {file} has no rows")
    return Dataset(path=file, rows=rows, content_hash=digest)


# The csv module refuses fields over 128 KiB by default; rows may carry
# whole documents, which the JSONL reader takes at any size.
_CSV_FIELD_LIMIT = 2**31 - 1


def _read_csv(text: str, file: Path) -> list[dict[str, Any]]:
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.DictReader(text.splitlines())
    rows = []
    try:
        if not reader.fieldnames:
            raise WorkflowError(f"dataset {file} has no header row; the first line must name the columns")
        for number, row in enumerate(reader, start=2):
            if None in row:
                raise WorkflowError(
                    f"{file}, line {number}: more fields than the {len(reader.fieldnames)} header columns"
                )
            rows.append(dict(row))
    except csv.Error as error:
        raise WorkflowError(
            f"{file}, line {reader.line_num}: not valid CSV ({error}); fix the line, or save the rows as .jsonl"
        ) from None
    return rows


def _read_jsonl(text: str, file: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise WorkflowError(f"{file}, line {number}: invalid JSON: {error}") from error
        if not isinstance(value, dict):
            raise WorkflowError(
                f"{file}, line {number}: expected a JSON object, got {type(value).__name__}"
            )
        rows.append(value)
    return rows
