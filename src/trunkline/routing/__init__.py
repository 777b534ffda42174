"""The `Router`: attempts, retries, fallbacks, limits, budgets, validation, pricing and the record."""

from trunkline.routing.output import OutputSpec
from trunkline.routing.router import Router
from trunkline.routing.state import CallResult
from trunkline.routing.streaming import CallStream

__all__ = ["CallResult", "CallStream", "OutputSpec", "Router"]
