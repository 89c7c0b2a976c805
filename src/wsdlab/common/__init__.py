"""Bottom layer shared by every other layer: config base class, atomic file IO, hashing."""

from wsdlab.common.config import StrictModel, describe_validation_error, load_yaml_model, set_by_dotted_key
from wsdlab.common.io import atomic_directory, atomic_write_bytes, atomic_write_text, default_cache_dir
from wsdlab.common.errors import (
    CheckpointError,
    ConfigError,
    DataUnavailableError,
    NonFiniteError,
    RunLockedError,
    WsdlabError,
)
from wsdlab.common.hashing import spec_hash

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataUnavailableError",
    "NonFiniteError",
    "RunLockedError",
    "WsdlabError",
    "StrictModel",
    "atomic_directory",
    "atomic_write_bytes",
    "atomic_write_text",
    "default_cache_dir",
    "describe_validation_error",
    "load_yaml_model",
    "set_by_dotted_key",
    "spec_hash",
]
