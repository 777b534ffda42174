"""Vector memory: texts with metadata, searched by the cosine distance of their embeddings.

`VectorMemory` embeds texts with an embedder (all-MiniLM-L6-v2 from the
``embeddings`` extra by default) and keeps them in a back end:

- `SqliteVecIndex`: a SQLite file with a sqlite-vec ``vec0`` table, the
  default on one machine (the ``vectors`` extra). Python's own sqlite3 module
  may be built without extension loading, so it opens the file with
  pysqlite3, which can load it.
- `StoreVectorIndex`: the ``vector_items`` table of a Trunkline store, so a
  fleet that shares a PostgreSQL store shares its vector memory too.
- `RedisVectorIndex`: one Redis hash per collection, for a fleet that
  shares a Redis server (plain Redis: no search module is needed).

The last two search exactly, by reading a collection's vectors and comparing
them in NumPy, which suits collections of up to some hundred thousand vectors.

Both return the same nearest texts for the same vectors. An item added again
under the same id replaces the earlier one.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import delete, func, select

from trunkline.errors import ConfigError
from trunkline.ids import random_hex
from trunkline.store.database import Store
from trunkline.store.tables import vector_items

INSTALL_HINT = "pip install 'trunkline[vectors]'"

#: Turns texts into one row of floats each.
Embedder = Callable[[list[str]], np.ndarray]


@dataclass(frozen=True)
class Hit:
    """A stored text near the query, with its cosine distance (0 is the same direction, 2 the opposite)."""

    item_id: str
    text: str
    distance: float
    metadata: dict[str, Any] = field(default_factory=dict)


class VectorIndex(Protocol):
    """A back end that adds, searches, counts and deletes vectors per collection."""

    def add(
        self, collection: str, ids: Sequence[str], texts: Sequence[str], metadata: Sequence[Mapping[str, Any]], vectors: np.ndarray
    ) -> None: ...

    def search(self, collection: str, vector: np.ndarray, k: int) -> list[Hit]: ...

    def count(self, collection: str) -> int: ...

    def delete(self, collection: str, ids: Sequence[str]) -> None: ...


class VectorMemory:
    """Texts of one collection, embedded and searched by meaning.

    Args:
        index: the back end, such as `SqliteVecIndex` or `StoreVectorIndex`.
        collection: the name the texts are kept under.
        embedder: the function that embeds texts; by default all-MiniLM-L6-v2.
    """

    def __init__(self, index: VectorIndex, collection: str = "default", *, embedder: Embedder | None = None) -> None:
        if not collection or len(collection) > 200:
            raise ConfigError(f"collection must have 1 to 200 characters, got {len(collection)}")
        self.index = index
        self.collection = collection
        self.embedder = embedder or minilm_embedder()

    def add(
        self,
        texts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[str] | None = None,
    ) -> list[str]:
        """Embed and store `texts`; return their ids (new random ones unless `ids` is given)."""
        texts = list(texts)
        metadata = list(metadata) if metadata is not None else [{} for _ in texts]
        ids = list(ids) if ids is not None else [random_hex() for _ in texts]
        if not (len(metadata) == len(ids) == len(texts)):
            raise ConfigError(
                f"texts, metadata and ids must have one entry each per text: got {len(texts)} texts, "
                f"{len(metadata)} metadata and {len(ids)} ids"
            )
        if texts:
            self.index.add(self.collection, ids, texts, metadata, _unit_rows(self.embedder(texts)))
        return ids

    def search(self, query: str, k: int = 5) -> list[Hit]:
        """Return the `k` stored texts nearest to `query`, nearest first."""
        if k < 1:
            raise ConfigError(f"k must be 1 or more, got {k}")
        return self.index.search(self.collection, _unit_rows(self.embedder([query]))[0], k)

    def count(self) -> int:
        return self.index.count(self.collection)

    def delete(self, ids: Sequence[str]) -> None:
        self.index.delete(self.collection, list(ids))


def minilm_embedder() -> Embedder:
    """Return an embedder that runs all-MiniLM-L6-v2 (384 dimensions) from the installed package."""
    from trunkline.evals.embeddings import load_model

    def embed(texts: list[str]) -> np.ndarray:
        return np.asarray(load_model().encode(texts, normalize_embeddings=True, show_progress_bar=False))

    return embed


def _unit_rows(vectors: Any) -> np.ndarray:
    """Return `vectors` as float32 rows of length 1; a zero row is rejected, having no direction."""
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ConfigError(f"the embedder must return one row per text, got an array of shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ConfigError("the embedder returned a vector of zeros, which has no direction to compare")
    return array / norms


class SqliteVecIndex:
    """Vectors in a SQLite file, searched by sqlite-vec's ``vec0`` table.

    Args:
        path: the SQLite file; created when missing.
        dimensions: the length of every vector, fixed when the file is created.
    """

    def __init__(self, path: str | Path, dimensions: int = 384) -> None:
        try:
            import pysqlite3.dbapi2 as sqlite3
            import sqlite_vec
        except ImportError as error:
            raise ConfigError(f"the sqlite-vec back end needs sqlite-vec and pysqlite3: {INSTALL_HINT}") from error
        self.dimensions = dimensions
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(str(path), check_same_thread=False)
        self._connection.enable_load_extension(True)
        sqlite_vec.load(self._connection)
        self._connection.enable_load_extension(False)
        with self._connection:
            self._connection.execute(
                "CREATE TABLE IF NOT EXISTS vec_items (rowid INTEGER PRIMARY KEY, collection TEXT NOT NULL, "
                "item_id TEXT NOT NULL, text TEXT NOT NULL, metadata TEXT NOT NULL, UNIQUE (collection, item_id))"
            )
            self._connection.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS vec_index USING vec0(collection TEXT PARTITION KEY, "
                f"embedding FLOAT[{dimensions}] distance_metric=cosine)"
            )

    def add(self, collection, ids, texts, metadata, vectors) -> None:  # noqa: ANN001
        _check_dimensions(vectors, self.dimensions)
        with self._lock, self._connection:
            for item_id, text, meta, vector in zip(ids, texts, metadata, vectors, strict=True):
                self._remove(collection, item_id)
                cursor = self._connection.execute(
                    "INSERT INTO vec_items (collection, item_id, text, metadata) VALUES (?, ?, ?, ?)",
                    (collection, item_id, text, json.dumps(dict(meta))),
                )
                self._connection.execute(
                    "INSERT INTO vec_index (rowid, collection, embedding) VALUES (?, ?, ?)",
                    (cursor.lastrowid, collection, vector.tobytes()),
                )

    def search(self, collection: str, vector: np.ndarray, k: int) -> list[Hit]:
        _check_dimensions(vector[None, :], self.dimensions)
        with self._lock:
            rows = self._connection.execute(
                "SELECT items.item_id, items.text, items.metadata, found.distance FROM "
                "(SELECT rowid, distance FROM vec_index WHERE embedding MATCH ? AND k = ? AND collection = ?) "
                "AS found JOIN vec_items AS items ON items.rowid = found.rowid ORDER BY found.distance",
                (vector.astype(np.float32).tobytes(), k, collection),
            ).fetchall()
        return [Hit(item_id, text, float(distance), json.loads(meta)) for item_id, text, meta, distance in rows]

    def count(self, collection: str) -> int:
        with self._lock:
            return self._connection.execute(
                "SELECT count(*) FROM vec_items WHERE collection = ?", (collection,)
            ).fetchone()[0]

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        with self._lock, self._connection:
            for item_id in ids:
                self._remove(collection, item_id)

    def close(self) -> None:
        self._connection.close()

    def _remove(self, collection: str, item_id: str) -> None:
        row = self._connection.execute(
            "SELECT rowid FROM vec_items WHERE collection = ? AND item_id = ?", (collection, item_id)
        ).fetchone()
        if row is not None:
            self._connection.execute("DELETE FROM vec_index WHERE rowid = ?", (row[0],))
            self._connection.execute("DELETE FROM vec_items WHERE rowid = ?", (row[0],))


class StoreVectorIndex:
    """Vectors in the ``vector_items`` table of a Trunkline store, SQLite or PostgreSQL, searched exactly."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, collection, ids, texts, metadata, vectors) -> None:  # noqa: ANN001
        table = vector_items
        rows = [
            {
                "collection": collection,
                "item_id": item_id,
                "text": text,
                "metadata": dict(meta),
                "dimensions": int(vector.shape[0]),
                "embedding": vector.astype(np.float32).tobytes(),
            }
            for item_id, text, meta, vector in zip(ids, texts, metadata, vectors, strict=True)
        ]
        with self.store.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.collection == collection, table.c.item_id.in_(list(ids))))
            connection.execute(table.insert(), rows)

    def search(self, collection: str, vector: np.ndarray, k: int) -> list[Hit]:
        table = vector_items
        query = select(table).where(table.c.collection == collection).order_by(table.c.item_id)
        with self.store.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        if not rows:
            return []
        sizes = {row["dimensions"] for row in rows}
        if len(sizes) > 1:
            raise ConfigError(f"collection {collection!r} mixes vectors of {sorted(sizes)} dimensions; rebuild it")
        matrix = np.frombuffer(b"".join(row["embedding"] for row in rows), dtype=np.float32).reshape(len(rows), -1)
        return [
            Hit(rows[index]["item_id"], rows[index]["text"], distance, rows[index]["metadata"] or {})
            for index, distance in _exact_nearest(collection, matrix, vector, k)
        ]

    def count(self, collection: str) -> int:
        table = vector_items
        query = select(func.count()).select_from(table).where(table.c.collection == collection)
        with self.store.engine.connect() as connection:
            return connection.execute(query).scalar_one()

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        table = vector_items
        with self.store.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.collection == collection, table.c.item_id.in_(list(ids))))


class RedisVectorIndex:
    """Vectors in Redis: one hash per collection, from item id to its text, metadata and embedding.

    Args:
        url: the Redis server, such as ``redis://127.0.0.1:6379/0``.
        prefix: put before every key, so that several indexes can share a database.
    """

    def __init__(self, url: str, *, prefix: str = "trunkline:vectors:") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix

    def add(self, collection, ids, texts, metadata, vectors) -> None:  # noqa: ANN001
        mapping = {
            item_id: json.dumps(
                {"text": text, "metadata": dict(meta), "embedding": base64.b64encode(vector.astype(np.float32).tobytes()).decode()}
            )
            for item_id, text, meta, vector in zip(ids, texts, metadata, vectors, strict=True)
        }
        self.client.hset(self._key(collection), mapping=mapping)

    def search(self, collection: str, vector: np.ndarray, k: int) -> list[Hit]:
        stored = sorted(self.client.hgetall(self._key(collection)).items())
        if not stored:
            return []
        items = [(item_id.decode(), json.loads(value)) for item_id, value in stored]
        matrix = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype=np.float32) for _, item in items])
        return [
            Hit(items[index][0], items[index][1]["text"], distance, items[index][1]["metadata"])
            for index, distance in _exact_nearest(collection, matrix, vector, k)
        ]

    def count(self, collection: str) -> int:
        return int(self.client.hlen(self._key(collection)))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self.client.hdel(self._key(collection), *ids)

    def close(self) -> None:
        self.client.close()

    def _key(self, collection: str) -> str:
        return f"{self.prefix}{collection}"


def _exact_nearest(collection: str, matrix: np.ndarray, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Return the `k` rows of `matrix` nearest to `vector` by cosine distance, as (row, distance), nearest first."""
    if matrix.shape[1] != vector.shape[0]:
        raise ConfigError(
            f"collection {collection!r} contains vectors of {matrix.shape[1]} dimensions, and the query has "
            f"{vector.shape[0]}; embed with the model the collection was built with"
        )
    distances = 1.0 - matrix @ vector.astype(np.float32)
    return [(int(index), float(distances[index])) for index in np.argsort(distances, kind="stable")[:k]]


def _check_dimensions(vectors: np.ndarray, dimensions: int) -> None:
    if vectors.shape[1] != dimensions:
        raise ConfigError(
            f"this index contains vectors of {dimensions} dimensions, got {vectors.shape[1]}; "
            "open it with the dimensions of your embedder"
        )
