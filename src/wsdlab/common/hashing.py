"""Stable short hashes of specs (run identity in the study runner)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def spec_hash(spec: BaseModel | dict[str, Any], length: int = 10) -> str:
    """sha256 of the canonical JSON of a spec (sorted keys), truncated to `length` hex digits."""
    data = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else spec
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
