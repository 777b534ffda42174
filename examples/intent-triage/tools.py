"""Tool and post-process steps of the intent-triage example.

Retrieval is BM25 (Robertson and Zaragoza's Okapi weighting, k1 = 1.5,
b = 0.75) over the labelled messages of the memory file, built once per file
and kept in memory: lexical, in-process, and with nothing to download.
With ``--param retriever=vectors`` it is Trunkline's vector memory instead:
all-MiniLM-L6-v2 embeddings in an in-memory sqlite-vec index, built once per
file, and each neighbour votes with its cosine similarity.
"""

from __future__ import annotations

import csv
import math
import re
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BM25Index:
    """An inverted index over short labelled texts, scored with BM25."""

    def __init__(self, texts: list[str], labels: list[str], k1: float = 1.5, b: float = 0.75) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
        self.texts = texts
        self.labels = labels
        self.k1 = k1
        self.b = b
        documents = [tokenize(text) for text in texts]
        self.lengths = [len(tokens) for tokens in documents]
        self.average_length = sum(self.lengths) / max(len(documents), 1)
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for index, tokens in enumerate(documents):
            for term, count in Counter(tokens).items():
                self.postings[term].append((index, count))
        total = len(documents)
        self.idf = {
            term: math.log(1 + (total - len(postings) + 0.5) / (len(postings) + 0.5))
            for term, postings in self.postings.items()
        }

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Return the `k` best (document index, score) pairs, best first."""
        scores: dict[int, float] = defaultdict(float)
        for term in set(tokenize(query)):
            idf = self.idf.get(term)
            if idf is None:
                continue
            for index, count in self.postings[term]:
                norm = self.k1 * (1 - self.b + self.b * self.lengths[index] / self.average_length)
                scores[index] += idf * count * (self.k1 + 1) / (count + norm)
        return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


@lru_cache(maxsize=4)
def _load_index(path: str, modified: float) -> BM25Index:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"text", "category"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"memory file {path} needs columns text and category; missing {sorted(missing)}")
    return BM25Index([row["text"] for row in rows], [row["category"] for row in rows])


def load_index(path: str) -> BM25Index:
    """Return the BM25 index of a labelled CSV, rebuilt only when the file changes."""
    file = Path(path)
    return _load_index(str(file.resolve()), file.stat().st_mtime)


@lru_cache(maxsize=4)
def _load_vectors(path: str, modified: float):  # noqa: ANN202
    from trunkline.memory import SqliteVecIndex, VectorMemory

    index = load_index(path)
    memory = VectorMemory(SqliteVecIndex(":memory:"), "memory")
    memory.add(index.texts, ids=[str(position) for position in range(len(index.texts))])
    return memory


def _vector_hits(message: str, path: str, neighbours: int) -> list[tuple[int, float]]:
    """Return the `neighbours` nearest labelled messages by meaning, as (index, cosine similarity)."""
    file = Path(path)
    memory = _load_vectors(str(file.resolve()), file.stat().st_mtime)
    return [(int(hit.item_id), max(1.0 - hit.distance, 0.0)) for hit in memory.search(message, neighbours)]


def retrieve(message: str, memory: str, neighbours: int, examples: int, retriever: str = "bm25") -> dict:
    """Find the labelled messages nearest to `message` and the intents they offer.

    Candidates are ordered by their summed BM25 score (or cosine similarity,
    with `retriever` "vectors"), so the most likely intent comes first. With
    no word in common, every intent in memory is a candidate.
    """
    if retriever not in ("bm25", "vectors"):
        raise ValueError(f"retriever must be bm25 or vectors, got {retriever!r}")
    index = load_index(memory)
    if retriever == "bm25":
        hits = index.search(message, neighbours)
    else:
        hits = _vector_hits(message, memory, neighbours)
    votes: dict[str, float] = defaultdict(float)
    for position, score in hits:
        votes[index.labels[position]] += score
    candidates = sorted(votes, key=lambda label: -votes[label])
    if not candidates:
        candidates = sorted(set(index.labels))
    nearest_examples = [
        {"text": index.texts[position], "intent": index.labels[position]}
        for position, _ in hits[:examples]
    ]
    return {
        "candidates": candidates,
        "examples": nearest_examples,
        "votes": [round(votes[label], 4) for label in candidates if label in votes],
    }


def vote(candidates: list[str], votes: list[float]) -> dict:
    """Return the intent of the strongest retrieval vote, and how sure that vote is.

    The confidence is the strongest intent's share of the summed BM25 scores
    of the neighbours: 1.0 when every neighbour agrees, low when several
    intents split them. With no word in common there is no vote, and the
    confidence is null, so that a cascade asks its next stage.
    """
    total = sum(votes)
    if not votes or total <= 0:
        return {"answer": {"intent": candidates[0]}, "confidence": None}
    return {"answer": {"intent": candidates[0]}, "confidence": votes[0] / total}


def normalise_intent(answer: dict, candidates: list[str]) -> dict:
    """Return the chosen intent, trimmed and checked against the candidates.

    The schema already restricts the model to the candidates; an answer
    outside them can only come from a route without schema support, and
    then the strongest candidate is used instead.
    """
    chosen = str(answer.get("intent", "")).strip().lower().replace(" ", "_")
    if chosen not in candidates:
        chosen = candidates[0]
    return {"intent": chosen}
