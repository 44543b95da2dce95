"""The task prompts: the question texts that say which task is asked, defined once.

The synthetic writer (data), the loaders and evaluation (session, evaluate) and chat all build
a caption, grounding or region-description question here, so a model trained on one reads the
same text in the others. Boxes are written as geostrata.boxes has them, {<x1><y1><x2><y2>} in
0-100 (the GeoChat / VRSBench convention).
"""

from __future__ import annotations

from geostrata.boxes import Box

CAPTION_QUESTION = "Describe this image in one sentence."
GROUND_TEMPLATE = "[refer] Where is {expression}? Answer with a box."
REGION_TEMPLATE = "[region] Describe the area {box}."


def ground_question(expression: str) -> str:
    """The grounding prompt for a referring expression ("the small red car left of the pond")."""
    return GROUND_TEMPLATE.format(expression=expression.strip().rstrip("?."))


def region_question(box: Box) -> str:
    """The region-description prompt for a box."""
    return REGION_TEMPLATE.format(box=box.text())
