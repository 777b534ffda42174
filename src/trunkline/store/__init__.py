"""The record store: SQLAlchemy tables, Alembic migrations, the background writer, queries."""

from trunkline.store.database import Store, open_store
from trunkline.store.writer import StoreWriter

__all__ = ["Store", "StoreWriter", "open_store"]
