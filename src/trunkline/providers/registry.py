"""Build the provider adapter a deployment declares."""

from __future__ import annotations

from trunkline.config import Deployment
from trunkline.errors import ConfigError
from trunkline.providers.base import Provider


def build_provider(deployment: Deployment) -> Provider:
    """Create the adapter for `deployment`; SDKs are imported only when used."""
    match deployment.provider:
        case "local":
            from trunkline.providers.local import LocalProvider

            return LocalProvider(deployment.model, deployment.options)
        case "openai" | "azure":
            from trunkline.providers.openai import OpenAIProvider

            azure_version = deployment.api_version if deployment.provider == "azure" else None
            if deployment.provider == "azure" and azure_version is None:
                raise ConfigError(
                    f"the azure deployment of {deployment.model!r} needs api_version, "
                    "such as \"2024-10-21\""
                )
            return OpenAIProvider.create(
                deployment.model,
                api_key=deployment.api_key(),
                base_url=deployment.base_url,
                azure_api_version=azure_version,
            )
        case "anthropic":
            from trunkline.providers.anthropic import AnthropicProvider

            return AnthropicProvider.create(
                deployment.model, api_key=deployment.api_key(), base_url=deployment.base_url
            )
        case "fake":
            from trunkline.providers.fake import fake_from_options

            return fake_from_options(deployment.model, deployment.options)
