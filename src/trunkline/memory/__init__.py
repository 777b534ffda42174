"""Memory kept across calls: the messages of a conversation, and texts searched by meaning."""

from trunkline.memory.conversation import ConversationMemory, StoredMessage
from trunkline.memory.vectors import Hit, RedisVectorIndex, SqliteVecIndex, StoreVectorIndex, VectorMemory

__all__ = [
    "ConversationMemory",
    "Hit",
    "RedisVectorIndex",
    "SqliteVecIndex",
    "StoreVectorIndex",
    "StoredMessage",
    "VectorMemory",
]
