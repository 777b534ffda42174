"""Table definitions; every change here needs an Alembic revision under migrations/."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("call_id", String(32), primary_key=True),
    Column("schema_version", Integer, nullable=False),
    Column("trace_id", String(32), nullable=False),
    Column("span_id", String(16), nullable=False),
    Column("parent_span_id", String(16)),
    Column("run_id", String(64)),
    Column("session_id", String(128)),
    Column("route", String(200), nullable=False),
    Column("provider", String(32)),
    Column("deployment", String(200)),
    Column("model_requested", String(200), nullable=False),
    Column("model_served", String(200)),
    Column("prompt_name", String(200)),
    Column("prompt_version", String(64)),
    Column("outcome", String(16), nullable=False),
    Column("error_kind", String(32)),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cache_read_tokens", Integer, nullable=False),
    Column("cache_write_tokens", Integer, nullable=False),
    Column("reasoning_tokens", Integer, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    # NULL, never 0, when no price was known, and price_missing is then true.
    Column("cost_usd", Float),
    Column("price_missing", Boolean, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("attempt_count", Integer, nullable=False),
    Column("retry_count", Integer, nullable=False),
    Column("fallback_count", Integer, nullable=False),
    # The whole CallRecord as JSON; the columns above are copies for querying.
    Column("record", Text, nullable=False),
    # The gateway key that made the call, from the record's ``api_key`` tag.
    Column("api_key_id", String(32)),
    # The Batch API job that served the call; NULL for an online call.
    Column("batch_id", String(64)),
    Index("ix_calls_run_id", "run_id"),
    Index("ix_calls_trace_id", "trace_id"),
    Index("ix_calls_started_at", "started_at"),
    Index("ix_calls_api_key_started", "api_key_id", "started_at"),
    # The dashboard's call list filters by session, and a session has too few
    # calls for a scan of the started_at index to find them quickly.
    Index("ix_calls_session_started", "session_id", "started_at"),
)

spans = Table(
    "spans",
    metadata,
    Column("span_id", String(16), primary_key=True),
    Column("trace_id", String(32), nullable=False),
    Column("parent_span_id", String(16)),
    Column("run_id", String(64)),
    Column("session_id", String(128)),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("attributes", JSON, nullable=False),
    Index("ix_spans_trace_id", "trace_id"),
    Index("ix_spans_run_id", "run_id"),
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("workflow_path", Text),
    Column("data_path", Text),
    Column("data_hash", String(64)),
    # SHA-256 over the workflow file, its templates and its tool modules.
    Column("workflow_hash", String(64)),
    Column("params", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("row_count", Integer),
    Column("summary", JSON),
)

run_rows = Table(
    "run_rows",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("row_index", Integer, primary_key=True),
    # Hash of the row's inputs: a resumed run skips a row only if it is unchanged.
    Column("row_hash", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("output", JSON),
    Column("expected", Text),
    Column("score", Float),
    Column("error", Text),
    Column("latency_ms", Float, nullable=False),
    Column("input_tokens", Integer, nullable=False),
    Column("output_tokens", Integer, nullable=False),
    Column("cost_usd", Float),
    Column("price_missing", Boolean, nullable=False),
    Column("retries", Integer, nullable=False),
    Column("fallbacks", Integer, nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    # Per step that keeps any, how it decided: the cascade stage whose output the row kept, and why.
    Column("details", JSON),
)

# One job a run sent to a provider's Batch API for one step. It is stored
# before the first poll, so a resumed run polls the same job instead of paying
# for a second one. `rows` maps each request's custom_id to its row index and
# to the row's values at that step, which the later steps need.
provider_batches = Table(
    "provider_batches",
    metadata,
    Column("batch_id", String(64), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("step", String(200), nullable=False),
    Column("deployment", String(200), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("input_file_id", String(64), nullable=False),
    # The provider's status: validating, in_progress, finalizing, completed,
    # failed, expired, cancelling or cancelled.
    Column("status", String(16), nullable=False),
    # True once every row's result was taken from the job.
    Column("collected", Boolean, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("rows", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("output_file_id", String(64)),
    Column("error_file_id", String(64)),
    Column("request_counts", JSON),
    # Why the whole job failed, expired or was cancelled.
    Column("error", Text),
    Index("ix_provider_batches_run_step", "run_id", "step"),
)

# One evaluation of one deployment (and prompt version) on one dataset. The
# router reads the latest golden-set results of a task to decide whether a
# cheaper deployment scores close enough to take that task's calls.
experiments = Table(
    "experiments",
    metadata,
    Column("experiment_id", String(64), primary_key=True),
    Column("name", String(200)),
    Column("task", String(200), nullable=False),
    Column("route", String(200)),
    Column("deployment", String(200), nullable=False),
    Column("model", String(200)),
    Column("prompt_name", String(200)),
    Column("prompt_version", String(64)),
    Column("dataset_name", String(200)),
    # SHA-256 of the rows scored, so two experiments on "the same data" can be checked.
    Column("dataset_hash", String(64), nullable=False),
    # True when the dataset is the task's golden set, the only kind a downgrade trusts.
    Column("golden", Boolean, nullable=False),
    Column("status", String(16), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("mean_score", Float),
    Column("ci_low", Float),
    Column("ci_high", Float),
    Column("cost_usd", Float),
    Column("latency_p50_ms", Float),
    Column("latency_p95_ms", Float),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("details", JSON, nullable=False),
    Index("ix_experiments_task", "task", "deployment"),
)

experiment_rows = Table(
    "experiment_rows",
    metadata,
    Column("experiment_id", String(64), primary_key=True),
    Column("row_key", String(200), primary_key=True),
    Column("repeat", Integer, primary_key=True),
    Column("inputs", JSON, nullable=False),
    Column("expected", JSON),
    Column("output", JSON),
    Column("score", Float),
    Column("explanation", Text),
    Column("call_id", String(32)),
    Column("cost_usd", Float),
    Column("latency_ms", Float),
    Column("error", Text),
    # Scorer name to {"value", "explanation"}; `score` is the first scorer's value.
    Column("scores", JSON),
)

# A prompt's numbered versions. A row is never updated: a change is a new
# version, and the same content (by hash) is the same version.
prompt_versions = Table(
    "prompt_versions",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("content_hash", String(64), nullable=False),
    Column("messages", JSON, nullable=False),
    Column("variables", JSON, nullable=False),
    Column("output_schema", JSON),
    Column("metadata", JSON, nullable=False),
    # The version this one was derived from, such as by a rewrite.
    Column("parent_version", Integer),
    Column("author", String(200)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_prompt_versions_hash", "name", "content_hash"),
)

# The version each label of a prompt points at now.
prompt_labels = Table(
    "prompt_labels",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("label", String(100), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("moved_by", String(200)),
    Column("moved_at", DateTime(timezone=True), nullable=False),
)

# Every move of a label, oldest first by move_id.
prompt_label_moves = Table(
    "prompt_label_moves",
    metadata,
    Column("move_id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False),
    Column("label", String(100), nullable=False),
    Column("from_version", Integer),
    Column("to_version", Integer, nullable=False),
    Column("moved_by", String(200)),
    Column("moved_at", DateTime(timezone=True), nullable=False),
    Index("ix_prompt_label_moves_name", "name", "label"),
)

# Gateway keys. Only a SHA-256 of each key is kept: a key is 32 random bytes,
# so a fast hash is enough to make the stored value useless to a reader.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("name", String(200)),
    Column("role", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("created_by", String(200)),
    Column("expires_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    # The key this one replaced when it was made by a rotation.
    Column("rotated_from", String(32)),
    Column("budget_usd_per_day", Float),
    Column("rpm", Integer),
    Column("tpm", Integer),
    # Route names the key may call; NULL for every route.
    Column("routes", JSON),
)

# The actions on keys, prompt versions, labels and settings: actor, action, time; oldest first by audit_id.
audit_log = Table(
    "audit_log",
    metadata,
    Column("audit_id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200)),
    Column("details", JSON, nullable=False),
    Index("ix_audit_log_at", "at"),
)

#: Upper bounds, in milliseconds, of the latency histogram in the rollups;
#: one more bucket counts the calls slower than the last bound.
LATENCY_BOUNDS_MS = (
    5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 7500, 10000, 15000, 30000, 60000, 120000,
)


def latency_bucket_columns() -> list[str]:
    """Return the histogram's column names, fastest bucket first."""
    names = [f"latency_le_{bound}ms" for bound in LATENCY_BOUNDS_MS]
    return [*names, f"latency_gt_{LATENCY_BOUNDS_MS[-1]}ms"]


def _rollup_sums() -> list[Column]:
    """Return the summed columns that both rollups have."""
    return [
        Column("calls", BigInteger, nullable=False),
        Column("input_tokens", BigInteger, nullable=False),
        Column("output_tokens", BigInteger, nullable=False),
        Column("cache_read_tokens", BigInteger, nullable=False),
        Column("reasoning_tokens", BigInteger, nullable=False),
        # Sums priced calls only; unpriced_calls counts the others.
        Column("cost_usd", Float, nullable=False),
        Column("unpriced_calls", BigInteger, nullable=False),
        Column("retries", BigInteger, nullable=False),
        Column("fallbacks", BigInteger, nullable=False),
        Column("latency_ms_sum", Float, nullable=False),
        *(Column(name, BigInteger, nullable=False) for name in latency_bucket_columns()),
    ]


# Sums of calls that the dashboard reads instead of every call. The writer
# adds each batch of calls to both rollups in the transaction that inserts
# them, and migration 0008 filled them from the calls stored before. Pruning
# calls leaves their sums. Both are clustered by their key on SQLite, so a
# range of days or hours is read in order.

# Per UTC day and route, model, key, workflow and outcome. Key columns hold
# '' instead of NULL, because NULLs never conflict in a primary key and the
# writer's upsert would add duplicate rows.
call_rollups_daily = Table(
    "call_rollups_daily",
    metadata,
    Column("day", Date, primary_key=True),
    Column("route", String(200), primary_key=True),
    # model_served, or model_requested for calls no model served.
    Column("model", String(200), primary_key=True),
    Column("api_key_id", String(32), primary_key=True),
    # runs.workflow of the call's run; '' for calls outside runs.
    Column("workflow", String(200), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    *_rollup_sums(),
    sqlite_with_rowid=False,
)

# Per UTC hour and outcome, for figures over windows that end within a day.
call_rollups_hourly = Table(
    "call_rollups_hourly",
    metadata,
    Column("hour", DateTime(timezone=True), primary_key=True),
    Column("outcome", String(16), primary_key=True),
    *_rollup_sums(),
    sqlite_with_rowid=False,
)

# The messages of a conversation, in the order they were added. `tokens` is
# the estimate that trims the conversation to a window.
conversation_messages = Table(
    "conversation_messages",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("role", String(16), nullable=False),
    Column("content", Text, nullable=False),
    Column("name", String(200)),
    Column("tool_call_id", String(200)),
    Column("tool_calls", JSON),
    Column("tokens", Integer, nullable=False),
    Column("added_at", DateTime(timezone=True), nullable=False),
)

# The summary of a conversation's messages up to `through_position`, which the window replaces them with.
conversation_summaries = Table(
    "conversation_summaries",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("summary", Text, nullable=False),
    Column("through_position", Integer, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Vector memory kept in the store, for fleets that share it; each embedding is
# float32 bytes, searched exactly by `trunkline.memory.vectors.StoreVectorIndex`.
vector_items = Table(
    "vector_items",
    metadata,
    Column("collection", String(200), primary_key=True),
    Column("item_id", String(200), primary_key=True),
    Column("text", Text, nullable=False),
    Column("metadata", JSON),
    Column("dimensions", Integer, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
)
