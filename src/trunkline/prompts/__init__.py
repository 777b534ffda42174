"""The prompt registry: named prompts with immutable, numbered versions and movable labels."""

from trunkline.prompts.files import prompt_yaml, pull, push
from trunkline.prompts.registry import LabelMove, PromptRegistry, PromptSummary
from trunkline.prompts.rendering import check_variables, render
from trunkline.prompts.versions import (
    ChatTemplate,
    PromptContent,
    PromptMetadata,
    PromptReference,
    PromptVersion,
    parse_reference,
)

__all__ = [
    "ChatTemplate",
    "LabelMove",
    "PromptContent",
    "PromptMetadata",
    "PromptReference",
    "PromptRegistry",
    "PromptSummary",
    "PromptVersion",
    "check_variables",
    "parse_reference",
    "prompt_yaml",
    "pull",
    "push",
    "render",
]
