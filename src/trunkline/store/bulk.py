"""Inserts compiled once per database, for the store writer's steady stream of rows.

`Connection.execute` builds a cache key, looks the statement up and binds
every parameter of every row in Python, all of it holding the GIL that the
gateway's event loop needs. `benchmarks/store_ingest.py` measured 88 us of
CPU a recorded call that way (its call row, span row and rollups) against
58 us with these statements, on a 2-core VM. A
`PreparedInsert` compiles its statement for one dialect when first used and
hands the driver plain tuples, converted by the bind processors SQLAlchemy
itself would apply, so the stored values are the same as through
`Connection.execute`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table, bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.dml import Insert

#: The dialects whose insert has ON CONFLICT; on others a duplicate key fails the insert.
UPSERT_DIALECTS = ("sqlite", "postgresql")


class PreparedInsert:
    """An INSERT of every column of `table`, with an optional ON CONFLICT clause.

    `on_conflict` sets what happens to a row whose `conflict_columns` (the
    primary key by default) match a stored row. The rules are "fail" (a
    plain insert), "skip" (keep the stored row), "replace" (overwrite it)
    and "add" (add `add_columns` of the new row to the stored ones). All but
    "fail" need a dialect in `UPSERT_DIALECTS`.
    """

    def __init__(
        self,
        table: Table,
        *,
        on_conflict: str = "fail",
        conflict_columns: Sequence[str] = (),
        add_columns: Sequence[str] = (),
    ) -> None:
        self.table = table
        self.on_conflict = on_conflict
        self.conflict_columns = list(conflict_columns or (c.name for c in table.primary_key.columns))
        self.add_columns = list(add_columns)
        self.columns = [column.name for column in table.columns]
        self._compiled: dict[tuple[str, str, str], _Compiled] = {}

    def execute(self, connection: Connection, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert `rows` (a missing key is NULL) and return the driver's count of rows written.

        The count is -1 for several rows on a dialect that cannot sum them
        (`supports_sane_multi_rowcount` false).
        """
        compiled = self._compiled_for(connection.dialect)
        parameters = [compiled.bind(row) for row in rows]
        if not parameters:
            return 0
        result = connection.exec_driver_sql(compiled.sql, parameters)
        if not connection.dialect.supports_sane_multi_rowcount and len(parameters) > 1:
            return -1
        return result.rowcount

    def _compiled_for(self, dialect: Dialect) -> _Compiled:
        key = (dialect.name, dialect.driver, str(dialect.paramstyle))
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _Compiled(self._statement(dialect), dialect, self.columns)
        return compiled

    def _statement(self, dialect: Dialect) -> Insert:
        values = {name: bindparam(name, type_=self.table.c[name].type) for name in self.columns}
        if self.on_conflict == "fail":
            return self.table.insert().values(values)
        if dialect.name not in UPSERT_DIALECTS:
            raise ValueError(
                f"on_conflict={self.on_conflict!r} needs SQLite or PostgreSQL, not {dialect.name}; use 'fail'"
            )
        module = sqlite if dialect.name == "sqlite" else postgresql
        statement = module.insert(self.table).values(values)
        if self.on_conflict == "skip":
            return statement.on_conflict_do_nothing(index_elements=self.conflict_columns)
        excluded = statement.excluded
        if self.on_conflict == "add":
            updates = {name: self.table.c[name] + excluded[name] for name in self.add_columns}
        elif self.on_conflict == "replace":
            updates = {name: excluded[name] for name in self.columns if name not in self.conflict_columns}
        else:
            raise ValueError(f"on_conflict must be fail, skip, add or replace, not {self.on_conflict!r}")
        return statement.on_conflict_do_update(index_elements=self.conflict_columns, set_=updates)


class _Compiled:
    """A statement's SQL for one dialect, and how to turn a row into its parameters."""

    def __init__(self, statement: Insert, dialect: Dialect, columns: list[str]) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.positional = compiled.positional
        # The order of the parameters in the SQL: bind names, each a column name here.
        self.names: list[str] = list(compiled.positiontup or columns) if compiled.positional else columns
        self.fields: list[tuple[str, Callable[[Any], Any] | None]] = []
        for name in self.names:
            column_type = statement.table.c[name].type.dialect_impl(dialect)
            self.fields.append((name, column_type.bind_processor(dialect)))

    def bind(self, row: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        get = row.get
        # Processors see None too: JSON, for one, stores it as 'null'.
        values = [process(get(name)) if process else get(name) for name, process in self.fields]
        if self.positional:
            return tuple(values)
        return dict(zip(self.names, values, strict=True))
