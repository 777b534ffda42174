"""SUM in queries that read the same numbers on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, cast, func
from sqlalchemy.sql.elements import ColumnElement


def summed(expression: ColumnElement[Any]) -> ColumnElement[Any]:
    """Return SUM(`expression`), as a 64-bit integer when `expression` is an integer.

    PostgreSQL sums integers as NUMERIC, which psycopg returns as Decimal,
    and a Decimal cannot be divided by the float sums beside it.
    """
    if isinstance(expression.type, Integer):
        return cast(func.sum(expression), BigInteger)
    return func.sum(expression)
