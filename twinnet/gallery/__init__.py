"""Galleries of enrolled identities: identification (1:N) and verification (1:1) at scale."""

from twinnet.gallery.gallery import (
    QUERY_SIDE,
    TEMPLATE_SIDE,
    Enrolment,
    Gallery,
    GalleryVerification,
    Identification,
    Match,
)
from twinnet.gallery.store import content_hash, file_content_hash

__all__ = [
    "QUERY_SIDE",
    "TEMPLATE_SIDE",
    "Enrolment",
    "Gallery",
    "GalleryVerification",
    "Identification",
    "Match",
    "content_hash",
    "file_content_hash",
]
