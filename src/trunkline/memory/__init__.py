"""Memory kept across calls: the messages of a conversation."""

from trunkline.memory.conversation import ConversationMemory, StoredMessage

__all__ = ["ConversationMemory", "StoredMessage"]
