"""GeoStrata: a remote-sensing vision-language model.

Semantic-augmented multi-level alignment (retrieval from an RS knowledge base at the scene,
region and object levels) and semantic-aware experts (one per level, coarse to fine), fused
into a Hugging Face causal LM. See docs/architecture.md for the map of the package.
"""

__version__ = "0.1.0"
