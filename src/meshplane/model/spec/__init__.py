"""Typed, normalised specs of every served kind: decoded once, read by everything past admission.

The classes in ``_types`` are generated from the served schemas by ``tools/gen_spec_types.py``; ``_base`` holds the
one duration parser and the decoder; ``_object`` the typed object wrapper. Import from this package only.

Errors: :class:`DecodeError` (a ``ValueError``) is the only one; its ``path`` names the field.
"""

from meshplane.model.spec import _types
from meshplane.model.spec._base import (
    DURATION_FORMS,
    DecodeError,
    DecodeLog,
    Duration,
    Json,
    SpecEnum,
    decode,
    encode,
    format_duration,
    parse_duration,
)
from meshplane.model.spec._object import (
    ConfigObject,
    ObjectMeta,
    decode_object,
    decode_resource,
    decode_spec,
    object_meta,
    spec_class,
)
from meshplane.model.spec._types import *  # noqa: F403

__all__ = [
    "DURATION_FORMS",
    "ConfigObject",
    "DecodeError",
    "DecodeLog",
    "Duration",
    "Json",
    "ObjectMeta",
    "SpecEnum",
    "decode",
    "decode_object",
    "decode_resource",
    "decode_spec",
    "encode",
    "format_duration",
    "object_meta",
    "parse_duration",
    "spec_class",
]
__all__ += _types.__all__

from meshplane.model.spec._object import condition_status  # noqa: E402

__all__ += ["condition_status"]
