"""The request sent to each deployment: the schema where it has no native mode, and repairs."""

from __future__ import annotations

from trunkline.config import Deployment
from trunkline.routing.output import OutputMismatch
from trunkline.routing.state import CallState
from trunkline.types.calls import ModelRequest, ModelResponse
from trunkline.types.messages import Message


def request_for(deployment: Deployment, state: CallState) -> ModelRequest:
    """Build the deployment's request, moving the schema into the prompt where it has no native mode."""
    template = state.template
    if state.spec is None or deployment.structured_output == "native":
        if template.model == deployment.model:
            return template
        return template.model_copy(update={"model": deployment.model})
    messages = (*template.messages, Message.system(state.spec.instructions()))
    extra = dict(template.extra)
    if deployment.structured_output == "json_object":
        extra["response_format"] = {"type": "json_object"}
    return template.model_copy(
        update={"model": deployment.model, "messages": messages, "output_schema": None, "extra": extra}
    )


def repair_request(
    request: ModelRequest, response: ModelResponse, mismatch: OutputMismatch, has_schema: bool
) -> ModelRequest:
    """Append the unusable output and what was wrong with it, so the model can correct itself."""
    expected = "only output that matches the required JSON schema" if has_schema else "a usable reply"
    messages = (
        *request.messages,
        Message.assistant(response.text),
        Message.user(f"That reply was not usable: {mismatch}. Reply again with {expected}."),
    )
    return request.model_copy(update={"messages": messages})
