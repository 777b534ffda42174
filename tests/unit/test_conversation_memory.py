"""Conversation memory on SQLite and PostgreSQL: messages kept in order, trimmed to a window, summarized."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from trunkline.errors import ConfigError
from trunkline.memory import ConversationMemory
from trunkline.memory.conversation import SUMMARY_PREFIX
from trunkline.store import open_store
from trunkline.types import Message
from trunkline.types.messages import ToolCall


@pytest.fixture
def store(store_url):
    store = open_store(store_url)
    yield store
    store.dispose()


def numbered(index: int) -> Message:
    # 40 characters: 10 estimated tokens each.
    return Message.user(f"message number {index:03d} " + "x" * 21)


def test_messages_kept_in_order(store) -> None:
    memory = ConversationMemory(store, "s1")
    call = ToolCall(id="call_1", name="lookup", arguments='{"id": 7}')
    assert memory.add(Message.system("Be brief."), Message.user("Where is my card?")) == [0, 1]
    assert memory.add(Message(role="assistant", content="", tool_calls=(call,))) == [2]
    assert memory.add(Message(role="tool", content="shipped", tool_call_id="call_1")) == [3]

    again = ConversationMemory(store, "s1")
    assert [item.message for item in again.messages()] == [
        Message.system("Be brief."),
        Message.user("Where is my card?"),
        Message(role="assistant", content="", tool_calls=(call,)),
        Message(role="tool", content="shipped", tool_call_id="call_1"),
    ]
    assert ConversationMemory(store, "other").messages() == []


def test_window_keeps_newest_within_tokens(store) -> None:
    memory = ConversationMemory(store, "s1", max_tokens=35)
    memory.add(*(numbered(index) for index in range(6)))
    assert memory.window() == [numbered(3), numbered(4), numbered(5)]


def test_window_keeps_a_large_last_message(store) -> None:
    memory = ConversationMemory(store, "s1", max_tokens=5)
    memory.add(numbered(0), numbered(1))
    assert memory.window() == [numbered(1)]


def test_summary_replaces_trimmed_messages(store) -> None:
    memory = ConversationMemory(store, "s1", max_tokens=40)
    memory.add(*(numbered(index) for index in range(6)))
    seen: list[tuple[str | None, list[Message]]] = []

    async def summarizer(previous: str | None, messages: list[Message]) -> str:
        seen.append((previous, messages))
        return f"{len(messages)} earlier"

    # The first summary (12 tokens with its heading) outgrows the 8 tokens set aside
    # for it, so message 3 is folded in by a second call.
    assert asyncio.run(memory.summarize(summarizer)) == "1 earlier"
    assert seen == [(None, [numbered(0), numbered(1), numbered(2)]), ("3 earlier", [numbered(3)])]
    assert memory.window() == [Message.system(SUMMARY_PREFIX + "1 earlier"), numbered(4), numbered(5)]

    # Later messages push more out; only those go to the summarizer, with the summary so far.
    memory.add(numbered(6), numbered(7))
    assert asyncio.run(memory.summarize(summarizer)) == "2 earlier"
    assert seen[2] == ("1 earlier", [numbered(4), numbered(5)])
    assert memory.summary() == ("2 earlier", 5)
    assert memory.window() == [Message.system(SUMMARY_PREFIX + "2 earlier"), numbered(6), numbered(7)]


def test_stale_summary_left_out(store) -> None:
    memory = ConversationMemory(store, "s1", max_tokens=40)
    memory.add(*(numbered(index) for index in range(6)))

    async def summarizer(previous: str | None, messages: list[Message]) -> str:
        return "old"

    asyncio.run(memory.summarize(summarizer))
    memory.add(*(numbered(index) for index in range(6, 12)))
    # The messages after the summary no longer fit beside it: the newest that fit, and no summary.
    assert memory.window() == [numbered(8), numbered(9), numbered(10), numbered(11)]


def test_nothing_to_summarize(store) -> None:
    memory = ConversationMemory(store, "s1", max_tokens=1000)
    memory.add(numbered(0))

    async def summarizer(previous: str | None, messages: list[Message]) -> str:
        raise AssertionError("nothing is trimmed")

    assert asyncio.run(memory.summarize(summarizer)) is None


def test_concurrent_adds_get_distinct_positions(store) -> None:
    def add(index: int) -> list[int]:
        return ConversationMemory(store, "shared").add(numbered(index))

    with ThreadPoolExecutor(max_workers=4) as pool:
        positions = [position for result in pool.map(add, range(20)) for position in result]
    assert sorted(positions) == list(range(20))
    assert len(ConversationMemory(store, "shared").messages()) == 20


def test_clear_removes_session(store) -> None:
    memory = ConversationMemory(store, "s1")
    memory.add(numbered(0))
    memory.clear()
    assert memory.messages() == []
    assert memory.summary() is None


@pytest.mark.parametrize(("session_id", "max_tokens"), [("", 10), ("x" * 65, 10), ("s1", 0)])
def test_invalid_arguments(store, session_id: str, max_tokens: int) -> None:
    with pytest.raises(ConfigError):
        ConversationMemory(store, session_id, max_tokens=max_tokens)
