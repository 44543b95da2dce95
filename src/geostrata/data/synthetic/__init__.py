"""The procedural synthetic remote-sensing benchmark.

Top-down aerial scenes built from recipes (land-cover layout + object mix), annotated at the
scene, region and object levels, with RSVQA-style questions and LLaVA-style conversations.
`synthesize` writes a benchmark folder; `load_annotations` and `load_meta` read it back.
"""

from geostrata.data.synthetic.files import load_annotations, load_meta
from geostrata.data.synthetic.holdout import Holdout
from geostrata.data.synthetic.writer import SynthConfig, synthesize

__all__ = ["Holdout", "SynthConfig", "load_annotations", "load_meta", "synthesize"]
