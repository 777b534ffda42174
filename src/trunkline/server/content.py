"""Checks that the OpenAI and Anthropic request models share: text content only, valid Unicode.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``), which Python decodes
into a `str` that no provider SDK can encode. `UnicodeText` rejects it while
the body is validated, so the gateway responds 400 before the request
reaches the router, a provider or a circuit breaker.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

#: The error type of text that is not valid Unicode, which the gateway rejects with 400, not 422.
LONE_SURROGATE = "lone_surrogate"
#: The error type of a content part that is not text.
UNSUPPORTED_CONTENT = "unsupported_content"

#: The content part types of text only.
TEXT_PARTS = frozenset({"text"})
#: Content part types that carry an image, in the OpenAI and the Anthropic API.
_IMAGE_PARTS = frozenset({"image_url", "image"})


def check_unicode(text: str) -> str:
    """Return `text` when it encodes as UTF-8, and raise a pydantic error naming the first bad character."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise PydanticCustomError(
            LONE_SURROGATE,
            "contains the lone surrogate {character} at character {index}, which is not valid "
            "Unicode; send the text as valid UTF-8, with surrogate pairs joined",
            {"character": f"\\u{ord(text[error.start]):04x}", "index": error.start},
        ) from None
    return text


#: A string that must be valid Unicode.
UnicodeText = Annotated[str, AfterValidator(check_unicode)]


def check_text_content(value: Any, allowed: frozenset[str] = TEXT_PARTS) -> Any:
    """Reject content parts whose type is not `allowed`, with a message a client can act on.

    Runs before the content is parsed as a string or a list of text parts,
    so a request with an image gets one clear problem instead of one per
    branch of that union.
    """
    if not isinstance(value, list):
        return value
    for part in value:
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            # Left to the model's own validation, which names the problem.
            continue
        if kind in _IMAGE_PARTS:
            raise PydanticCustomError(
                UNSUPPORTED_CONTENT, "images are not supported by this gateway; send text content"
            )
        if kind not in allowed:
            raise PydanticCustomError(
                UNSUPPORTED_CONTENT,
                "content parts of type {kind} are not supported by this gateway; send text content",
                {"kind": repr(kind)[:80]},
            )
    return value
