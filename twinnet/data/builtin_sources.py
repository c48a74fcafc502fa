"""The built-in data formats: importing this module registers them (one import per format module)."""

from twinnet.data import archives, audio, fingerprints, omniglot, signatures, text, unlabelled
from twinnet.tracking import source as tracking

#: format modules → the formats they register
MODULES = {
    archives: ("images", "image_pairs"),
    audio: ("audio", "trials"),
    fingerprints: ("fingerprints",),
    omniglot: ("omniglot_runs",),
    signatures: ("offline_signatures", "online_signatures"),
    text: ("sts", "mrpc", "text_pairs"),
    tracking: ("tracking",),
    unlabelled: ("unlabelled_images", "sentences", "unlabelled_trajectories"),
}
