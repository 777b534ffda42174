"""Conversation memory: a session's messages kept in the store, trimmed to a token window.

`ConversationMemory.add` appends messages to a session. `window` returns what
to send a model: every message while they fit in `max_tokens`, and after that
the summary of the older ones (made by `summarize`) as a system message,
followed by the messages it does not cover. Token counts are estimates, four
characters a token, as elsewhere where no tokenizer is at hand.

Several processes may add to one session: positions are taken from the
stored maximum inside the insert's transaction, and an insert that loses a
race for a position is retried after a short random pause.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from trunkline.errors import ConfigError, StoreError
from trunkline.providers.base import estimate_tokens
from trunkline.store.database import Store
from trunkline.store.tables import conversation_messages, conversation_summaries
from trunkline.types.messages import Message, ToolCall

#: Tries of an insert when other writers keep taking the same positions first.
MAX_INSERT_ATTEMPTS = 20
#: Summarizer calls in one `summarize`, when a summary outgrows the room it had.
MAX_SUMMARY_ROUNDS = 3

SUMMARY_PREFIX = "Summary of the earlier conversation:\n"

#: Writes the summary of a conversation's messages; see `ConversationMemory.summarize`.
Summarizer = Callable[[str | None, list[Message]], Awaitable[str]]


@dataclass(frozen=True)
class StoredMessage:
    """A message of a conversation, with its position and its estimated tokens."""

    position: int
    message: Message
    tokens: int


class ConversationMemory:
    """The messages of one session, and the window of them sent to a model.

    Args:
        store: where the messages are kept.
        session_id: the conversation; at most 64 characters.
        max_tokens: the window's size in estimated tokens.
    """

    def __init__(self, store: Store, session_id: str, *, max_tokens: int = 2000) -> None:
        if not session_id or len(session_id) > 64:
            raise ConfigError(
                f"session_id must have 1 to 64 characters, got {len(session_id)}: {session_id[:80]!r}"
            )
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be 1 or more, got {max_tokens}")
        self.store = store
        self.session_id = session_id
        self.max_tokens = max_tokens

    def add(self, *messages: Message) -> list[int]:
        """Append `messages` in order and return their positions."""
        if not messages:
            return []
        for attempt in range(1, MAX_INSERT_ATTEMPTS + 1):
            try:
                return self._insert(messages)
            except IntegrityError as error:
                if attempt == MAX_INSERT_ATTEMPTS:
                    raise StoreError(
                        f"could not add {len(messages)} message(s) to session {self.session_id!r}: "
                        f"other writers took the next positions {attempt} times in a row ({error.orig})"
                    ) from error
                # A random pause, so that writers that collided do not collide again.
                time.sleep(random.uniform(0, 0.002 * attempt))
        raise AssertionError("unreachable")

    def _insert(self, messages: Sequence[Message]) -> list[int]:
        table = conversation_messages
        with self.store.engine.begin() as connection:
            last = connection.execute(
                select(func.max(table.c.position)).where(table.c.session_id == self.session_id)
            ).scalar_one()
            first = 0 if last is None else last + 1
            now = datetime.now(UTC)
            rows = [_row(self.session_id, first + offset, message, now) for offset, message in enumerate(messages)]
            connection.execute(table.insert(), rows)
        return [row["position"] for row in rows]

    def messages(self) -> list[StoredMessage]:
        """Return every stored message of the session, oldest first."""
        table = conversation_messages
        query = select(table).where(table.c.session_id == self.session_id).order_by(table.c.position)
        with self.store.engine.connect() as connection:
            return [_stored(row) for row in connection.execute(query).mappings()]

    def summary(self) -> tuple[str, int] | None:
        """Return the stored summary and the last position it covers, or None."""
        table = conversation_summaries
        query = select(table.c.summary, table.c.through_position).where(table.c.session_id == self.session_id)
        with self.store.engine.connect() as connection:
            row = connection.execute(query).first()
        return (row.summary, row.through_position) if row else None

    def window(self) -> list[Message]:
        """Return the messages to send: the summary and the messages after it, or the newest that fit.

        When every message fits in `max_tokens`, all of them. Otherwise, the
        stored summary as a system message and every message it does not
        cover, when they fit together. Otherwise, which means `summarize`
        was not called since the last messages were added, the newest
        messages that fit, and no summary. The newest message is always
        included, even when it alone is larger than the window.
        """
        stored = self.messages()
        newest = _newest_within(stored, self.max_tokens)
        if len(newest) == len(stored):
            return [item.message for item in newest]
        summary = self.summary()
        if summary is not None:
            text, through = summary
            after = [item for item in stored if item.position > through]
            if after and _note_tokens(text) + sum(item.tokens for item in after) <= self.max_tokens:
                return [_note(text), *(item.message for item in after)]
        return [item.message for item in newest]

    async def summarize(self, summarizer: Summarizer) -> str | None:
        """Fold the messages that do not fit beside the summary into it, and store it for `window`.

        `summarizer(previous, messages)` gets the summary so far (None at
        first) and the messages it does not cover yet, oldest first. It
        returns the summary of all of them, for example the output of one
        router call that requests a summary from a model. When the new summary is
        longer than the room it had, the next messages are folded in too, up
        to `MAX_SUMMARY_ROUNDS` times. Return the summary, or None when every
        message fits in the window.
        """
        stored = self.messages()
        summary = self.summary()
        previous, through = summary if summary else (None, -1)
        # Room for the summary: its current size, or a fifth of the window before the first.
        reserve = _note_tokens(previous) if previous is not None else self.max_tokens // 5
        for _ in range(MAX_SUMMARY_ROUNDS):
            newest = _newest_within(stored, self.max_tokens - reserve)
            trimmed = stored[: len(stored) - len(newest)]
            new = [item for item in trimmed if item.position > through]
            if not new:
                return previous
            previous = await summarizer(previous, [item.message for item in new])
            through = trimmed[-1].position
            self._save_summary(previous, through)
            reserve = _note_tokens(previous)
            after = sum(item.tokens for item in stored if item.position > through)
            if reserve + after <= self.max_tokens:
                break
        return previous

    def _save_summary(self, text: str, through: int) -> None:
        table = conversation_summaries
        values = {
            "session_id": self.session_id,
            "summary": text,
            "through_position": through,
            "tokens": estimate_tokens(text),
            "updated_at": datetime.now(UTC),
        }
        with self.store.engine.begin() as connection:
            connection.execute(delete(table).where(table.c.session_id == self.session_id))
            connection.execute(table.insert().values(**values))

    def clear(self) -> None:
        """Delete the session's messages and summary."""
        with self.store.engine.begin() as connection:
            for table in (conversation_messages, conversation_summaries):
                connection.execute(delete(table).where(table.c.session_id == self.session_id))


def _note(summary: str) -> Message:
    return Message.system(SUMMARY_PREFIX + summary)


def _note_tokens(summary: str) -> int:
    return estimate_tokens(_note(summary).content)


def _newest_within(stored: list[StoredMessage], budget: int) -> list[StoredMessage]:
    """Return the newest messages whose tokens add up to at most `budget`; at least the newest one."""
    newest: list[StoredMessage] = []
    total = 0
    for item in reversed(stored):
        if newest and total + item.tokens > budget:
            break
        newest.append(item)
        total += item.tokens
    newest.reverse()
    return newest


def _row(session_id: str, position: int, message: Message, now: datetime) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "position": position,
        "role": message.role,
        "content": message.content,
        "name": message.name,
        "tool_call_id": message.tool_call_id,
        "tool_calls": [call.model_dump() for call in message.tool_calls] or None,
        "tokens": estimate_tokens(message.content),
        "added_at": now,
    }


def _stored(row: Any) -> StoredMessage:
    message = Message(
        role=row["role"],
        content=row["content"],
        name=row["name"],
        tool_call_id=row["tool_call_id"],
        tool_calls=tuple(ToolCall.model_validate(call) for call in row["tool_calls"] or ()),
    )
    return StoredMessage(position=row["position"], message=message, tokens=row["tokens"])
