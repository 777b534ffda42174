"""Trunkline: run LLM pipelines and keep a queryable record of every model call."""

from trunkline.config import Settings, load_settings
from trunkline.errors import (
    AllDeploymentsFailed,
    BudgetExceeded,
    CallError,
    ConfigError,
    ErrorKind,
    OutputInvalid,
    ProviderError,
    StoreError,
    TrunklineError,
    WorkflowError,
)
from trunkline.recording import recording
from trunkline.routing import CallResult, CallStream, Router
from trunkline.tracing import session, start_run
from trunkline.types import CallRecord, Message, Usage

__version__ = "0.1.0"

__all__ = [
    "AllDeploymentsFailed",
    "BudgetExceeded",
    "CallError",
    "CallRecord",
    "CallResult",
    "CallStream",
    "ConfigError",
    "ErrorKind",
    "Message",
    "OutputInvalid",
    "ProviderError",
    "Router",
    "Settings",
    "StoreError",
    "TrunklineError",
    "Usage",
    "WorkflowError",
    "__version__",
    "load_settings",
    "recording",
    "session",
    "start_run",
]
