"""The records every other layer reads and writes."""

from trunkline.types.calls import (
    SCHEMA_VERSION,
    Attempt,
    CallRecord,
    FallbackHop,
    ModelRequest,
    ModelResponse,
    Validation,
)
from trunkline.types.messages import Message, Role, ToolCall, ToolDefinition
from trunkline.types.spans import SpanRecord
from trunkline.types.usage import Cost, Usage

__all__ = [
    "SCHEMA_VERSION",
    "Attempt",
    "CallRecord",
    "Cost",
    "FallbackHop",
    "Message",
    "ModelRequest",
    "ModelResponse",
    "Role",
    "SpanRecord",
    "ToolCall",
    "ToolDefinition",
    "Usage",
    "Validation",
]
