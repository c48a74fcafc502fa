"""Fingerprints: preprocessing stored with the model (resolution, segmentation, CLAHE, Gabor
enhancement), impression augmentation, local patch matching, the NIST NBIS anchor (MINDTCT +
Bozorth3) and score fusion.

Importing :mod:`twinnet.fingerprints.preprocess` registers the ``fingerprint`` image preprocessor
(``model.input.preprocess``); the other modules are imported where they are used.
"""
