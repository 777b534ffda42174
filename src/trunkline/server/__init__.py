"""The gateway and dashboard: an OpenAI- and Anthropic-compatible HTTP API over the `Router`."""

from trunkline.server.app import create_app

__all__ = ["create_app"]
