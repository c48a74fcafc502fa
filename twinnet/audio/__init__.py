"""Audio inside the model: log-mel features, voice-activity trimming and training-time augmentation.

Speaker encoders (:mod:`twinnet.encoders.speaker`) take raw waveforms ``(batch, samples)`` and own an
:class:`AudioFrontend`, so a saved model computes its own features and ``verify``, the gallery and
the service take recordings as they are.
"""

from twinnet.audio.augment import AudioAugment
from twinnet.audio.features import AudioFrontend, LogMel, mel_filterbank, voiced_mask

__all__ = ["AudioAugment", "AudioFrontend", "LogMel", "mel_filterbank", "voiced_mask"]
