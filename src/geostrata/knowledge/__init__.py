"""The RS semantic knowledge base: entries at four levels, text encoders, FAISS search.

The model depends only on `Retriever` (protocol.py); `KnowledgeBase` implements it. torch,
transformers and faiss are imported lazily, inside the functions that need them.
"""

from geostrata.knowledge.base import Hit, KBStats, KnowledgeBase, default_dir
from geostrata.knowledge.encoder import (
    CLIPTextEncoder,
    EmbeddingCache,
    HashingEncoder,
    MiniLMEncoder,
    TextEncoder,
)
from geostrata.knowledge.index import IndexConfig, TopK, VectorIndex, numpy_search
from geostrata.knowledge.protocol import LEVELS, Retriever, SearchResult
from geostrata.knowledge.schema import Entry, Level, load_entries, read_entry_file

__all__ = [
    "LEVELS", "CLIPTextEncoder", "EmbeddingCache", "Entry", "HashingEncoder", "Hit", "IndexConfig",
    "KBStats", "KnowledgeBase", "Level", "MiniLMEncoder", "Retriever", "SearchResult",
    "TextEncoder", "TopK", "VectorIndex", "default_dir", "load_entries", "numpy_search",
    "read_entry_file",
]
