"""The `trunkline.toml` configuration: deployments, routes, prices and the store.

The file is found in the working folder or named by ``TRUNKLINE_CONFIG``.
With no file, the built-in default declares the local model, so every
command works out of the box. Secrets are referred to by the name of the
environment variable that contains them and are never stored here.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from trunkline.errors import ConfigError
from trunkline.redaction import add_pattern, register_secret

CONFIG_FILE = "trunkline.toml"
DEFAULT_DATABASE_URL = "sqlite:///.trunkline/trunkline.db"
LOCAL_MODEL = "smollm2-135m-instruct"

ProviderName = Literal["local", "openai", "azure", "anthropic", "fake"]


class Price(BaseModel):
    """A price override in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cache_read_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)


class Deployment(BaseModel):
    """One model at one provider, with the credentials to reach it."""

    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    model: str
    base_url: str | None = None
    #: Name of the environment variable that contains the API key, never the key itself.
    api_key_env: str | None = None
    #: Azure OpenAI only: the API version the deployment speaks.
    api_version: str | None = None
    context_window: int | None = Field(default=None, gt=0)
    #: Output tokens assumed when a request sets no ``max_tokens``, for
    #: token-per-minute reservations and worst-case budget checks.
    max_output_tokens: int = Field(default=4096, gt=0, strict=True)
    #: Requests and tokens per minute, and calls in flight, that this
    #: deployment may take; None leaves that limit off.
    rpm: int | None = Field(default=None, gt=0, strict=True)
    tpm: int | None = Field(default=None, gt=0, strict=True)
    max_concurrent: int | None = Field(default=None, gt=0, strict=True)
    #: How a JSON Schema output contract is sent: ``native`` uses the
    #: provider's structured-output mode, ``json_object`` requests any JSON
    #: and validates it, ``instructions`` puts the schema in the prompt.
    structured_output: Literal["native", "json_object", "instructions"] = "native"
    #: Provider-specific settings, such as ``n_threads`` for the local model.
    options: dict[str, Any] = Field(default_factory=dict)
    #: Share of the online price that a call through the provider's Batch API
    #: costs. OpenAI and Azure OpenAI bill batch calls at 50 % of the online
    #: rates. genai-prices 0.2 has no batch prices for them, so 0.5 is the
    #: default, and a contract with another discount sets its own share here.
    batch_price_factor: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)

    def api_key(self) -> str | None:
        """Read the API key from the environment variable the deployment names."""
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        register_secret(key)
        if not key:
            raise ConfigError(
                f"environment variable {self.api_key_env} is not set; the deployment of "
                f"model {self.model!r} reads its API key from it, so export it first"
            )
        return key


class Route(BaseModel):
    """An ordered list of deployments with the policy for trying them."""

    model_config = ConfigDict(extra="forbid")

    deployments: list[str] = Field(min_length=1)
    #: Attempts per deployment, the first included.
    max_attempts: int = Field(default=3, ge=1)
    #: Seconds one attempt may take before it counts as timed out.
    timeout_s: float = Field(default=120.0, gt=0)
    #: Base and cap of the exponential backoff between attempts, in seconds.
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    #: A `Retry-After` longer than this ends the retries at that deployment, in seconds.
    retry_after_max_s: float = Field(default=60.0, ge=0)
    #: How many times an output that fails its schema is sent back for repair.
    max_repairs: int = Field(default=1, ge=0)
    #: Seconds the whole call may take, every attempt, wait and fallback
    #: included; None for no deadline beyond the attempts' own timeouts.
    deadline_s: float | None = Field(default=None, gt=0)
    #: Seconds a stream may stay open without sending anything.
    stream_idle_timeout_s: float = Field(default=30.0, gt=0)
    #: Maximum wait for a deployment's rate limit before the call goes to
    #: the next deployment, or fails with rate_limited at the last one.
    limit_wait_max_s: float = Field(default=10.0, ge=0)
    #: Consecutive failures that open a deployment's circuit breaker, and
    #: seconds it stays open before one probe call is let through.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    #: Deployments of this route that may take a call another one refused
    #: with content_filter; no others are tried for that reason.
    content_filter_fallbacks: list[str] = Field(default_factory=list)
    #: Cheaper deployments this route's task allows, and when to use them.
    downgrade_to: list[str] = Field(default_factory=list)
    downgrade_when: list[Literal["budget", "rate_limit", "scores"]] = Field(
        default_factory=lambda: ["budget", "rate_limit", "scores"]
    )
    #: A cheaper deployment whose golden-set score is at most this much
    #: below the preferred one's is used instead of it.
    downgrade_tolerance: float = Field(default=0.02, ge=0, le=1)
    #: The task whose evaluation results decide score-based downgrades;
    #: by default the route's name.
    task: str | None = None


class Budgets(BaseModel):
    """Spending limits in US dollars; each call is checked against all that apply."""

    model_config = ConfigDict(extra="forbid")

    run_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    session_usd: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    #: Limits per tag, keyed ``name=value``, such as ``"team=search" = 25.0``.
    tags: dict[str, Annotated[float, Field(gt=0, allow_inf_nan=False)]] = Field(
        default_factory=dict
    )

    @field_validator("tags")
    @classmethod
    def _check_tag_keys(cls, tags: dict[str, float]) -> dict[str, float]:
        for key in tags:
            name, separator, value = key.partition("=")
            if not separator or not name or not value:
                raise ValueError(
                    f"tag budget key {key!r} must read name=value, such as \"team=search\""
                )
        return tags


class StoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    #: Records written per transaction by the background writer.
    batch_size: int = Field(default=200, ge=1)
    #: Seconds the writer waits to fill a batch before it commits what it has.
    flush_interval_s: float = Field(default=0.5, gt=0)
    #: Age in days past which `trunkline prune` deletes records when it is
    #: given no --older-than; None keeps everything.
    retention_days: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class TracingSettings(BaseModel):
    """The destinations of spans besides the store, and what the spans may carry."""

    model_config = ConfigDict(extra="forbid")

    #: OTLP traces endpoint that recorded spans are also sent to: a URL such
    #: as ``http://127.0.0.1:4318/v1/traces`` for ``http/protobuf``, or
    #: ``http://127.0.0.1:4317`` for ``grpc``. ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
    #: and ``OTEL_EXPORTER_OTLP_ENDPOINT`` win over it.
    otlp_endpoint: str | None = None
    #: ``http/protobuf`` or ``grpc`` (which needs ``trunkline[grpc]``);
    #: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` and ``OTEL_EXPORTER_OTLP_PROTOCOL`` win over it.
    otlp_protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    #: Extra headers sent with every export, such as an API key of the back end.
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    #: Records waiting for export at most; more are dropped and counted.
    otlp_max_queue: int = Field(default=4096, ge=1, strict=True)
    #: Add the messages and the output to exported call spans, after
    #: redaction; ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`` wins over it.
    capture_content: bool = False


class WorkerSettings(BaseModel):
    """Distributed runs: `trunkline run --workers celery` and `trunkline worker`; needs ``trunkline[workers]``."""

    model_config = ConfigDict(extra="forbid")

    #: Redis URL of the Celery broker. ``TRUNKLINE_BROKER_URL`` wins over it;
    #: with neither, the shared Redis (``redis_url``) serves as the broker too.
    broker_url: str | None = None
    #: The queue that runs send rows to and workers take them from.
    queue: str = "trunkline"
    #: Seconds a task stays unacknowledged before the broker hands it to
    #: another worker, as it does for a worker that died. A task whose rows take
    #: longer is handed out twice, and the row leases keep the second copy waiting.
    visibility_timeout_s: float = Field(default=300.0, gt=0)
    #: Seconds a worker's lease on a row lasts unless it renews it; a worker
    #: renews it every third of this while the row runs.
    lease_s: float = Field(default=30.0, gt=0)

    def resolved_broker_url(self, shared_redis_url: str | None) -> str | None:
        """Return ``TRUNKLINE_BROKER_URL``, then the file's value, then the shared Redis URL."""
        return os.environ.get("TRUNKLINE_BROKER_URL") or self.broker_url or shared_redis_url


class MlflowSettings(BaseModel):
    """Logging of each batch run as one MLflow run; needs ``trunkline[mlflow]``."""

    model_config = ConfigDict(extra="forbid")

    #: Whether every `trunkline run` logs to MLflow as if given --mlflow.
    #: --no-mlflow turns it off for one run.
    enabled: bool = Field(default=False, strict=True)
    #: Tracking URI, such as ``sqlite:///mlflow.db`` or ``http://127.0.0.1:5000``.
    #: ``MLFLOW_TRACKING_URI`` wins over it. With neither, MLflow's default applies.
    tracking_uri: str | None = None
    #: Experiment name, created when missing. ``MLFLOW_EXPERIMENT_NAME`` wins
    #: over it, and the workflow's name is the default.
    experiment: str | None = None
    #: Artifact location of an experiment that Trunkline creates. An existing
    #: experiment keeps its own.
    artifact_location: str | None = None

    def resolved_tracking_uri(self) -> str | None:
        """Return ``MLFLOW_TRACKING_URI``, then the file's value, or None for MLflow's default."""
        return os.environ.get("MLFLOW_TRACKING_URI") or self.tracking_uri

    def resolved_experiment(self, workflow: str) -> str:
        """Return ``MLFLOW_EXPERIMENT_NAME``, then the file's value, then `workflow`."""
        return os.environ.get("MLFLOW_EXPERIMENT_NAME") or self.experiment or workflow


class SimulatedUpstream(BaseModel):
    """The behaviour of one simulated provider in `trunkline loadtest`.

    The rates are shares of the requests the upstream receives, and their
    sum must not exceed 1; the rest succeed after the drawn latency.
    """

    model_config = ConfigDict(extra="forbid")

    #: Median latency of a reply in milliseconds, drawn from a log-normal.
    latency_ms: float = Field(default=500.0, ge=0, allow_inf_nan=False)
    #: Sigma of that log-normal; 0 gives every reply the median latency.
    latency_sigma: float = Field(default=0.5, ge=0, le=5, allow_inf_nan=False)
    #: Share of requests that get a 429 response with a ``Retry-After`` header.
    rate_limit_rate: float = Field(default=0.0, ge=0, le=1)
    #: Seconds the 429 responses ask the client to wait, sent as ``Retry-After``.
    retry_after_s: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    #: Share of requests that get a `server_error_status` response, in bursts.
    server_error_rate: float = Field(default=0.0, ge=0, lt=1)
    #: Mean number of consecutive requests a burst of server errors lasts;
    #: 1 spreads them at random with no bursts.
    server_error_burst: float = Field(default=1.0, ge=1, allow_inf_nan=False)
    server_error_status: int = Field(default=503, ge=500, le=599, strict=True)
    #: Share of requests that get no reply until `hang_s` has passed, so the
    #: route's attempt timeout fires first unless it is longer.
    timeout_rate: float = Field(default=0.0, ge=0, le=1)
    #: Seconds a timed-out request hangs before the upstream gives up with 504.
    hang_s: float = Field(default=300.0, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _check_rates(self) -> SimulatedUpstream:
        total = self.rate_limit_rate + self.server_error_rate + self.timeout_rate
        if total > 1.0:
            raise ValueError(
                f"rate_limit_rate + server_error_rate + timeout_rate is {total:g}, above 1; "
                "they are shares of the same requests, so lower one of them"
            )
        burst = self.server_error_burst
        if burst > 1 and self.server_error_rate > burst / (burst + 1):
            raise ValueError(
                f"server_error_rate {self.server_error_rate:g} is above {burst / (burst + 1):.3f}, "
                f"the highest share that bursts of {burst:g} requests on average can reach; "
                "lower the rate or lengthen server_error_burst"
            )
        return self


class LoadtestSettings(BaseModel):
    """Defaults of `trunkline loadtest`: the simulated provider of each deployment."""

    model_config = ConfigDict(extra="forbid")

    #: Simulated providers by deployment name; a load test profile's own win.
    upstreams: dict[str, SimulatedUpstream] = Field(default_factory=dict)
    #: The simulated provider of every deployment not named in `upstreams`.
    default_upstream: SimulatedUpstream = Field(default_factory=SimulatedUpstream)


class Settings(BaseModel):
    """The whole configuration, after defaults are merged in."""

    model_config = ConfigDict(extra="forbid")

    deployments: dict[str, Deployment] = Field(default_factory=dict)
    routes: dict[str, Route] = Field(default_factory=dict)
    #: Price overrides keyed by model name; they win over genai-prices.
    prices: dict[str, Price] = Field(default_factory=dict)
    store: StoreSettings = Field(default_factory=StoreSettings)
    budgets: Budgets = Field(default_factory=Budgets)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    workers: WorkerSettings = Field(default_factory=WorkerSettings)
    loadtest: LoadtestSettings = Field(default_factory=LoadtestSettings)
    #: Regular expressions whose matches are replaced by [REDACTED] in
    #: everything stored, logged or exported, beside the built-in key formats.
    redact_patterns: list[str] = Field(default_factory=list)
    #: Redis URL for limits, budgets and breakers shared between processes;
    #: ``TRUNKLINE_REDIS_URL`` wins over it.
    redis_url: str | None = None
    default_route: str = "local"

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        for pattern in self.redact_patterns:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"redact_patterns entry {pattern!r} is not a valid regular expression: {error}"
                ) from None
        known = ", ".join(sorted(self.deployments)) or "none"
        for route_name, route in self.routes.items():
            for key in ("deployments", "downgrade_to", "content_filter_fallbacks"):
                for name in getattr(route, key):
                    if name not in self.deployments:
                        raise ValueError(
                            f"routes.{route_name}.{key} names deployment {name!r}, which is "
                            f"not declared; declared deployments: {known}"
                        )
            for name in route.content_filter_fallbacks:
                if name not in route.deployments:
                    raise ValueError(
                        f"routes.{route_name}.content_filter_fallbacks names {name!r}, which is "
                        f"not in the route's deployments {route.deployments}; a fallback is "
                        "only tried from that list, so add it there"
                    )
        # Checked only when set: Settings built in code without the local
        # model keep the default name until a call needs it.
        named = "default_route" in self.model_fields_set
        if named and self.default_route not in {*self.routes, *self.deployments}:
            choices = ", ".join(sorted({*self.routes, *self.deployments}))
            raise ValueError(
                f"default_route {self.default_route!r} is neither a route nor a deployment; "
                f"configured: {choices}"
            )
        return self

    def database_url(self) -> str:
        """Return the store URL: ``TRUNKLINE_DATABASE_URL``, then the file, then the default."""
        return os.environ.get("TRUNKLINE_DATABASE_URL") or self.store.url or DEFAULT_DATABASE_URL

    def shared_redis_url(self) -> str | None:
        """Return the Redis URL for shared state: ``TRUNKLINE_REDIS_URL``, then the file."""
        return os.environ.get("TRUNKLINE_REDIS_URL") or self.redis_url

    def route(self, name: str) -> Route:
        """Return the route `name`; a bare deployment name acts as a one-deployment route."""
        if name in self.routes:
            return self.routes[name]
        if name in self.deployments:
            return Route(deployments=[name])
        choices = ", ".join(sorted({*self.routes, *self.deployments}))
        raise ConfigError(
            f"unknown route or deployment {name!r}; configured: {choices}. "
            f"Declare it under [routes.{name}] or [deployments.{name}] in {CONFIG_FILE}"
        )


def builtin_defaults() -> dict[str, Any]:
    """Return the configuration that applies before any file: the local model, free."""
    return {
        "deployments": {
            "local": {"provider": "local", "model": LOCAL_MODEL, "context_window": 2048},
        },
        "routes": {"local": {"deployments": ["local"], "max_attempts": 2}},
        "prices": {LOCAL_MODEL: {"input_per_mtok": 0.0, "output_per_mtok": 0.0}},
    }


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key in ("deployments", "routes", "prices") and isinstance(value, dict):
            merged[key] = {**base.get(key, {}), **value}
        else:
            merged[key] = value
    return merged


def find_config_file(start: Path | None = None) -> Path | None:
    """Return the file named by ``TRUNKLINE_CONFIG``, or ``trunkline.toml`` in the working folder."""
    named = os.environ.get("TRUNKLINE_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(
                f"TRUNKLINE_CONFIG names {named!r}, which is not a file; "
                "point it at a trunkline.toml or unset it"
            )
        return path
    candidate = (start or Path.cwd()) / CONFIG_FILE
    return candidate if candidate.is_file() else None


def load_settings(path: Path | str | None = None) -> Settings:
    """Load and validate the configuration, merged over the built-in defaults.

    The file's ``redact_patterns`` are registered with `trunkline.redaction`,
    for every later record, span and log line of the process.

    Raises:
        ConfigError: the file is not valid TOML or a value is invalid; the
            message names the key and, where it can be found, the line.
    """
    file = Path(path) if path is not None else find_config_file()
    data = builtin_defaults()
    text = ""
    if file is not None:
        text = file.read_text(encoding="utf-8")
        try:
            data = _merge(data, tomllib.loads(text))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{file} is not valid TOML: {error}") from error
    try:
        settings = Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, file, text)) from error
    # Redaction is process-wide, so the patterns apply to every path from here on.
    for pattern in settings.redact_patterns:
        add_pattern(pattern)
    # Every deployment's key, used or not: a prompt or an error may quote any of them.
    for deployment in settings.deployments.values():
        if deployment.api_key_env:
            register_secret(os.environ.get(deployment.api_key_env))
    return settings


def _describe(error: ValidationError, file: Path | None, text: str) -> str:
    where = str(file) if file else "the built-in configuration"
    lines = [f"invalid configuration in {where}:"]
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        line = _line_of(text, problem["loc"])
        at = f" (line {line})" if line else ""
        message = problem["msg"].removeprefix("Value error, ")
        if not key:
            # A check across tables names its own keys in the message.
            lines.append(f"  {message}")
            continue
        if problem["type"] == "extra_forbidden":
            message += f"; valid keys here: {', '.join(_valid_keys(problem['loc']))}"
        lines.append(f"  {key}{at}: {message}")
    return "\n".join(lines)


_TABLE_MODELS: dict[str, type[BaseModel]] = {
    "deployments": Deployment,
    "routes": Route,
    "prices": Price,
    "store": StoreSettings,
    "budgets": Budgets,
    "tracing": TracingSettings,
    "mlflow": MlflowSettings,
    "workers": WorkerSettings,
    "loadtest": LoadtestSettings,
}


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    """Return the keys allowed where an unknown key `loc` was found."""
    model: type[BaseModel] = Settings
    if len(loc) >= 2 and loc[0] in _TABLE_MODELS:
        model = _TABLE_MODELS[str(loc[0])]
    return sorted(model.model_fields)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """Find the line that sets the last named key of `loc` below its table header."""
    keys = [str(part) for part in loc if isinstance(part, str)]
    if not text or not keys:
        return None
    lines = text.splitlines()
    start = 0
    if len(keys) >= 2:
        # The header must end after the name: [deployments.ab] is not [deployments.a].
        header = re.compile(
            rf"^\s*\[\s*{re.escape(keys[0])}\s*\.\s*([\"']?){re.escape(keys[1])}\1\s*\]"
        )
        start = next((i for i, line in enumerate(lines) if header.match(line)), 0)
    setter = re.compile(rf"^\s*\"?{re.escape(keys[-1])}\"?\s*=")
    for number in range(start, len(lines)):
        if setter.match(lines[number]):
            return number + 1
    return start + 1 if start else None
