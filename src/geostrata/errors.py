"""The project's own exception types.

Every bad input raises one of these with a message that names the file, line, key or value at
fault, so a user sees what to fix instead of an unrelated traceback.
"""


class GeoStrataError(Exception):
    """Base class of every error GeoStrata raises on purpose."""


class ImageError(GeoStrataError):
    """An image file is missing, corrupt, or has a layout we cannot turn into RGB."""


class AnnotationError(GeoStrataError):
    """An annotation / question / instruction file is malformed (names file and line or key)."""


class DatasetNotFoundError(GeoStrataError):
    """A dataset folder or file is not where the user said; nothing is downloaded instead."""


class KnowledgeBaseError(GeoStrataError):
    """A knowledge-base file or query is invalid (names file, line and field)."""


class ConfigError(GeoStrataError):
    """A configuration value or file is invalid (names the field and the value)."""


class CheckpointError(GeoStrataError):
    """A checkpoint is missing, incomplete, or not in a safe format."""


class InputError(GeoStrataError):
    """A user request is out of bounds: empty or over-long question, oversized image, ..."""


class DependencyError(GeoStrataError):
    """A program GeoStrata needs is not installed or failed to run (names it and the fix)."""
