"""Galleries of enrolled identities: identification (1:N) and verification (1:1) at scale."""

from twinnet.gallery.gallery import QUERY_SIDE, TEMPLATE_SIDE, Gallery, GalleryVerification, Identification, Match

__all__ = ["QUERY_SIDE", "TEMPLATE_SIDE", "Gallery", "GalleryVerification", "Identification", "Match"]
