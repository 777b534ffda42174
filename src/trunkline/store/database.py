"""Opening the store: the engine, SQLite settings and Alembic migrations."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from trunkline.errors import StoreError

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _enable_sqlite_wal(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    # WAL lets the CLI read while a run writes; NORMAL sync is safe with WAL
    # (a crash can lose the last commits but never corrupts the file).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class Store:
    """The database of call records, spans and runs, and its migrations."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = self._create_engine(url)

    @staticmethod
    def _create_engine(url: str) -> Engine:
        try:
            return Store._engine_for(url)
        except (ArgumentError, ImportError) as error:
            raise StoreError(
                f"cannot open a store at {Store._hide_password(url)!r}: {error}. "
                "Use sqlite:///PATH, or a "
                "postgresql:// URL with its driver installed (pip install psycopg)"
            ) from error

    @staticmethod
    def _engine_for(url: str) -> Engine:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database
            if database and database != ":memory:":
                folder = Path(database).parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise StoreError(
                        f"cannot create the folder {folder} for the SQLite store: {error}; "
                        "set TRUNKLINE_DATABASE_URL to a writable place"
                    ) from error
            engine = create_engine(url, connect_args={"check_same_thread": False})
            event.listen(engine, "connect", _enable_sqlite_wal)
            return engine
        return create_engine(url, pool_pre_ping=True)

    @staticmethod
    def _hide_password(url: str) -> str:
        try:
            return make_url(url).render_as_string(hide_password=True)
        except ArgumentError:
            return url

    def current_revision(self) -> str | None:
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head_revision() -> str | None:
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    def upgrade(self) -> None:
        """Apply every Alembic revision the database has not seen yet."""
        try:
            if self.current_revision() == self.head_revision():
                return
            config = _alembic_config()
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as error:
            raise StoreError(
                f"cannot open or migrate the store at {self.safe_url()}: {error}. "
                "Check TRUNKLINE_DATABASE_URL or [store] url in trunkline.toml"
            ) from error
        logger.info("store at %s migrated to revision %s", self.safe_url(), self.head_revision())

    def safe_url(self) -> str:
        """Return the URL with any password hidden, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def _parse(url: str):  # noqa: ANN202
    try:
        return make_url(url)
    except ArgumentError as error:
        raise StoreError(f"invalid store URL {url!r}: {error}; use sqlite:///PATH") from error


def open_store(url: str, *, migrate: bool = True, must_exist: bool = False) -> Store:
    """Open the store at `url`, migrating it to the latest revision unless `migrate` is False.

    With `must_exist`, a SQLite file that does not exist yet is an error
    instead of a new, empty store, so a mistyped URL does not look like a
    store with no calls.
    """
    if must_exist:
        parsed = _parse(url)
        database = parsed.database if parsed.get_backend_name() == "sqlite" else None
        if database and database != ":memory:" and not Path(database).is_file():
            raise StoreError(
                f"no store at {Path(database).resolve()}; run `trunkline run` first, or point "
                "TRUNKLINE_DATABASE_URL at an existing store"
            )
    store = Store(url)
    if migrate:
        store.upgrade()
    return store


def as_utc(moment: datetime) -> datetime:
    """Return a stored time in UTC.

    SQLite returns times without a time zone, and PostgreSQL in the session's time zone.
    """
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
