"""The built-in augmentations, one per kind of input: importing this module registers them."""

from twinnet.data import trajectory_augment, transforms

#: augmentation modules → the kinds of input (``model.input.kind``) they register
MODULES = {
    transforms: ("image",),
    trajectory_augment: ("sequence",),
}
