"""Galleries of enrolled identities: identification (1:N) and verification (1:1) at scale."""

from twinnet.gallery.gallery import Gallery, GalleryVerification, Identification, Match

__all__ = ["Gallery", "GalleryVerification", "Identification", "Match"]
