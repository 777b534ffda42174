"""The `Router`: attempts, retries, fallbacks, validation, pricing and the record."""

from trunkline.routing.output import OutputSpec
from trunkline.routing.router import CallResult, Router

__all__ = ["CallResult", "OutputSpec", "Router"]
