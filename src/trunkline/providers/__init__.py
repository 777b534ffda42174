"""Provider adapters behind one async interface."""

from trunkline.providers.base import Provider, parse_retry_after
from trunkline.providers.registry import build_provider

__all__ = ["Provider", "build_provider", "parse_retry_after"]
