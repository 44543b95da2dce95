"""GeoStrata model: multi-level vision, semantic augmentation, semantic experts, fusion, LLM.

Import cost: this pulls in torch and transformers, so CLI command modules import it
inside functions.
"""

from geostrata.model.configuration import GeoStrataConfig
from geostrata.model.modeling import GeoStrataForConditionalGeneration, count_parameters
from geostrata.model.outputs import GeoStrataOutput, RetrievedCues
from geostrata.model.processing import GeoStrataProcessor, ImageProcessor
from geostrata.model.tokenizer import train_tokenizer
from geostrata.model.vision import MultiLevelFeatures

__all__ = [
    "GeoStrataConfig",
    "GeoStrataForConditionalGeneration",
    "GeoStrataOutput",
    "GeoStrataProcessor",
    "ImageProcessor",
    "MultiLevelFeatures",
    "RetrievedCues",
    "count_parameters",
    "train_tokenizer",
]
