"""An OpenAI-compatible HTTP API over the inference API (`geostrata api MODEL_DIR`).

schema.py (the request and the turn it answers), images.py (image_url -> array), bounds.py
(limits, key and body-size guard, concurrency gate, OpenAI error objects), server.py (routes,
completions, streaming). docs/api.md describes the endpoints.
"""

from geostrata.api.bounds import ApiLimits
from geostrata.api.server import Served, create_app, serve

__all__ = ["ApiLimits", "Served", "create_app", "serve"]
