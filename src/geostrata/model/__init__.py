"""GeoStrata model: multi-level vision, semantic augmentation, semantic experts, fusion, LLM.

Import cost: the classes below pull in torch and transformers, so they are imported on first use
(`geostrata.model.settings`, which validates model settings, needs neither).
"""

from geostrata.lazy import lazy_exports

_EXPORTS = {
    "GeoStrataConfig": "geostrata.model.configuration",
    "GeoStrataForConditionalGeneration": "geostrata.model.modeling",
    "count_parameters": "geostrata.model.modeling",
    "GeoStrataOutput": "geostrata.model.outputs",
    "RetrievedCues": "geostrata.model.outputs",
    "ImageProcessor": "geostrata.model.imaging",
    "GeoStrataProcessor": "geostrata.model.processing",
    "train_tokenizer": "geostrata.model.tokenizer",
    "MultiLevelFeatures": "geostrata.model.vision",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
