"""Typed configuration (pydantic) for models, data and training, read from YAML or JSON.

Unknown keys are errors that name the key, so a typo never silently falls back to a default.
Overrides on the command line use dotted paths: ``train.lr=3e-4 model.encoder.params.hidden=32``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from twinnet.errors import ConfigError
from twinnet.registry import DATA_SOURCES, LOGGERS, PROTOCOLS

# Every number of a config has a valid range: a count of 0, a negative learning rate or NaN would
# otherwise run and produce a meaningless model with exit status 0. Pydantic's messages for these
# ("Input should be greater than 0") reach the user through format_validation_error, naming the key.
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Seed = Annotated[int, Field(ge=0, le=2**64 - 1)]  # what numpy and torch.manual_seed both accept


class _Strict(BaseModel):
    # allow_inf_nan=False: a NaN or infinite float (YAML .nan / .inf) is never a meaningful setting
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class InputSpec(_Strict):
    """What one input of the model is, and how raw files become tensors."""

    kind: Literal["image", "vector", "sequence", "text", "audio"] = "image"
    channels: Literal[1, 3] = 1
    size: tuple[PositiveInt, PositiveInt] = (28, 28)
    """Image height and width after resizing."""
    features: PositiveInt | None = None
    """Vector length (``kind: vector``), or features per time step (``kind: sequence``)."""
    length: PositiveInt | None = None
    """Time steps of a sequence (``kind: sequence``); trajectories are resampled to it. Audio: samples
    of each training clip (longer recordings are cut, shorter ones repeated; default one second);
    a trained audio model embeds recordings of any length."""
    sample_rate: PositiveInt = 16000
    """Audio: the model's sample rate; recordings are resampled to it and mixed to mono."""
    max_seconds: PositiveFloat = 60.0
    """Audio: the longest recording read, checked from the file's header before decoding."""
    invert: bool = False
    """Images: use ``1 - x``, so dark ink on white paper becomes high values."""
    face_crop: bool = False
    """Images: cut each image to its largest face (OpenCV's Haar cascade, the ``vision`` extra) before
    resizing; images where no face is found are kept whole and named in a warning."""
    face_margin: Annotated[float, Field(ge=0, le=1)] = 0.1
    """With ``face_crop``: enlarge the face box by this share of its size on every side."""
    preprocess: list[ComponentConfig] = Field(default_factory=list)
    """Images: registered preprocessing steps applied in order to every image the model reads (before
    resizing), saved with the model, e.g. ``[{name: fingerprint, params: {dpi: 250}}]``."""
    max_length: PositiveInt | None = None
    """Texts: tokens kept per text (longer texts are truncated); ``null`` = the encoder's default
    (the pretrained model's ``max_seq_length``, 256 for all-MiniLM-L6-v2; 64 words for ``small_text``)."""

    def encoder_args(self) -> dict[str, Any]:
        if self.kind == "text":
            return {} if self.max_length is None else {"max_length": self.max_length}
        if self.kind == "image":
            h, w = self.size
            return {"in_channels": self.channels, "input_size": (h, w), "in_features": self.channels * h * w}
        if self.kind == "audio":
            return {"sample_rate": self.sample_rate}
        if self.features is None:
            raise ConfigError(f"model.input.features: required when model.input.kind is {self.kind!r}")
        if self.kind == "sequence":
            if self.length is None:
                raise ConfigError("model.input.length: required when model.input.kind is 'sequence'")
            return {"in_features": self.features, "length": self.length}
        return {"in_features": self.features}

    def example_shape(self) -> tuple[int, ...]:
        if self.kind == "text":
            return ()
        if self.kind == "image":
            return (self.channels, *self.size)
        if self.kind == "sequence":
            return (int(self.features or 0), int(self.length or 0))
        if self.kind == "audio":
            return (int(self.length or self.sample_rate),)
        return (int(self.features or 0),)


class ComponentConfig(_Strict):
    """A registered component chosen by name, with keyword parameters for its constructor."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TrackerSettings(_Strict):
    """The tracker's hyper-parameters (SiamFC's, Bertinetto et al. 2016, and the box heads'), saved
    with a tracking model (``model.tracker``) and overridable when tracking
    (:func:`twinnet.tracking.build_tracker`)."""

    scales: Annotated[int, Field(ge=1, le=9)] = 3
    """Search images per frame, at scales ``scale_step ** k`` around the current size."""
    scale_step: Annotated[float, Field(ge=1)] = 1.0375
    scale_penalty: Annotated[float, Field(gt=0, le=1)] = 0.9745
    """Multiplies the response of every scale but the current one (changing size costs evidence)."""
    scale_lr: Fraction = 0.59
    """Scale damping: how far the size moves to the best scale's in one frame."""
    window_influence: Fraction = 0.176
    """Weight of the cosine window (a prior for small motions) mixed into the response."""
    response_up: Annotated[int, Field(ge=1, le=32)] = 16
    """The response is upsampled this many times (bicubic) before its peak is read."""
    context: NonNegativeFloat = 0.5
    """Context margin ``p = context·(w+h)`` around the target in the exemplar."""
    min_scale: PositiveFloat = 0.2
    max_scale: PositiveFloat = 5.0
    """Target size limits, as multiples of the initial size."""
    penalty_k: NonNegativeFloat = 0.04
    """Box heads (``anchor_free``, ``rpn``): how much a change of scale or aspect ratio costs a candidate box,
    ``exp(-penalty_k·(r·s - 1))`` with ``r``, ``s`` the ratio and scale changes (each ≥ 1); the box
    trackers also read ``window_influence``, ``scale_lr`` (size smoothing), ``context`` and the size
    limits, not the scale pyramid's settings."""


class ModelConfig(_Strict):
    input: InputSpec = Field(default_factory=InputSpec)
    encoder: ComponentConfig = Field(default_factory=lambda: ComponentConfig(name="conv4"))
    """A registered encoder; ``auto`` (image folders): training picks the encoder, and the input's
    size and channels, from the images and says what it picked (:mod:`twinnet.training.autopick`)."""
    comparator: ComponentConfig = Field(default_factory=lambda: ComponentConfig(name="euclidean"))
    normalize: bool = False
    """L2-normalise embeddings before comparing them."""
    encoder_b: ComponentConfig | None = None
    """Half-twin: a second encoder for the second input (its own input spec in ``input_b``)."""
    input_b: InputSpec | None = None
    share: list[str] = Field(default_factory=list)
    """Half-twin: dotted names of sub-modules of ``encoder`` that ``encoder_b`` shares."""
    whitening: ComponentConfig | None = None
    """A whitening of the embeddings fitted on the training items after training and saved with the
    model (:mod:`twinnet.whitening`: ``centre``, ``wccn``); ``None``: none."""
    tracker: TrackerSettings | None = None
    """Tracking models (a fully-convolutional twin: ``input`` the exemplar, ``input_b`` the search
    image): the tracker's hyper-parameters."""


def _smallest_first(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"the smallest scale comes first: [{v[1]}, {v[0]}], not [{v[0]}, {v[1]}]")
    return v


class TrajectoryAugmentConfig(_Strict):
    """Random distortions of pen trajectories (``model.input.kind: sequence``, the features of
    :func:`twinnet.data.signatures.trajectory_features`), per item: the measured signals (positions,
    pressure, pen-down) are distorted and the derived features (velocity, direction, speed) computed
    again from them, normalised as the reader does (positions centred and divided by the standard
    deviation of y, pressure scaled to a maximum of 1). So a translation or a uniform scale would be
    undone: the affine part is rotation, shear and unequal x and y scales. Each is off at 0."""

    time_warp: Annotated[float, Field(ge=0, lt=1)] = 0.2
    """Smooth monotone time warp: the writing speed varies over the trajectory by a factor in
    ``1 ± time_warp`` (drawn at 5 knots, linear between them); the first and last points stay."""
    crop: Annotated[float, Field(ge=0, le=0.25)] = 0.0
    """Cut up to this share of the duration from the start, and independently from the end."""
    rotation: Annotated[float, Field(ge=0, le=45)] = 5.0
    """Maximum rotation of the positions in degrees (uniform in ±rotation)."""
    shear: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Maximum horizontal shear (slant; uniform in ±shear)."""
    scale: tuple[Annotated[float, Field(gt=0, le=4)], Annotated[float, Field(gt=0, le=4)]] = (0.9, 1.1)
    """Range of the x and y scale factors, drawn independently (after normalisation their ratio,
    the aspect of the writing, is what changes)."""
    jitter: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Gaussian noise on the positions, standard deviation in units of the normalised height (the
    standard deviation of y)."""
    pressure_gamma: Annotated[float, Field(ge=0, le=1)] = 0.2
    """Pressure profile: ``pressure ** g`` with ``log g`` uniform in ±pressure_gamma (a plain gain
    would be undone by the scaling to a maximum of 1); an all-zero pressure stays zero."""
    pressure_noise: Annotated[float, Field(ge=0, le=1)] = 0.02
    """Multiplicative Gaussian noise on the pressure at every step (zero pressure stays zero)."""

    @field_validator("scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _smallest_first(v)


class AugmentConfig(_Strict):
    """Training-time augmentation of the items, by the kind of input (``model.input.kind``;
    :func:`twinnet.data.transforms.build_augmenter`). Images: random affine distortions per image on
    tensors (Koch et al. 2015 use rotation ±10°, shear ±0.3, scale 0.8–1.2 and translation ±2 px),
    flips, and colour jitter (brightness, contrast, saturation; faces), the fields below. Pen
    trajectories (``kind: sequence``): the ``trajectory`` section."""

    enabled: bool = False
    rotation: Annotated[float, Field(ge=0, le=180)] = 10.0
    """Maximum rotation in degrees (uniform in ±rotation)."""
    shear: NonNegativeFloat = 0.3
    """Maximum shear (uniform in ±shear, per axis)."""
    scale: tuple[PositiveFloat, PositiveFloat] = (0.8, 1.2)
    """Range of the scale factor (smallest, largest)."""
    translate: Fraction = 0.05
    """Maximum translation as a fraction of the image size."""
    hflip: bool = False
    vflip: bool = False
    probability: Fraction = 1.0
    """Probability that an image is distorted at all."""
    brightness: Fraction = 0.0
    """Colour: multiply each image by a factor uniform in ``1 ± brightness`` (0: off)."""
    contrast: Fraction = 0.0
    """Colour: scale each image's deviation from its mean grey by ``1 ± contrast``."""
    saturation: Fraction = 0.0
    """Colour (RGB images): blend each image with its grey version by ``1 ± saturation``."""
    grayscale: Fraction = 0.0
    """Colour (RGB images): the probability that an image is replaced by its grey version (SimCLR
    uses 0.2, so that a views loss cannot match two views by their colour histogram alone)."""
    blur: NonNegativeFloat = 0.0
    """Gaussian blur: each image is blurred with a standard deviation uniform in [0, ``blur``]
    pixels (0: off)."""
    elastic: NonNegativeFloat = 0.0
    """Elastic distortion (skin): a smooth random displacement field of up to this share of the image size."""
    pressure: NonNegativeInt = 0
    """Pressure: grey dilation or erosion (dark ridges thinner or thicker) by up to this many pixels."""
    noise: Fraction = 0.0
    """Gaussian pixel noise of up to this standard deviation (images in [0, 1])."""
    occlude: Fraction = 0.0
    """Partial impressions: blank (to the image's border value) a random band covering up to this share."""
    trajectory: TrajectoryAugmentConfig = Field(default_factory=TrajectoryAugmentConfig)
    """Pen trajectories: time warp, crop, rotation, shear, scale, jitter, pressure."""

    @field_validator("scale")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _smallest_first(v)


class DataConfig(_Strict):
    format: str = "auto"
    """A registered data format (``twinnet train --help`` lists them). ``auto``: recognised from
    what ``path`` is: a pairs file, a zip or an image folder (text models: STS-B, MRPC or generic
    text pairs, by the file's first line); the signature formats read ``<writer>/`` +
    ``<writer>_forg/`` image folders, or SVC2004 ``U<u>S<n>.TXT`` files; ``text_pairs`` is a
    CSV/TSV/JSONL file with ``text_a``, ``text_b`` and ``label`` or ``score``."""
    path: str | None = None
    """An image folder (one sub-folder per class, see ``class_depth``) or a pairs file."""
    class_depth: PositiveInt | None = None
    """How many folder levels name a class: 1 = ``root/class/img``, 2 = ``root/group/class/img``;
    ``null``: 2 for Omniglot's layout, else 1."""
    val_classes: float = 0.2
    """Share of the classes (or groups, see ``split``) held out for validation: a split by class, so
    validation measures generalisation to identities never trained on."""
    split: Literal["class", "group"] = "class"
    """Hold out whole classes, or whole groups (Omniglot alphabets with ``class_depth: 2``; the
    writers of signature data, so no writer is in two splits)."""
    val_path: str | None = None
    """An explicit validation folder, zip or (text) pairs file instead of ``val_classes``. For pairs
    files, ``val_classes`` is the share of *pairs* held out."""
    score_max: PositiveFloat | None = None
    """Graded text pairs: the top of the score scale in generic files (scores are divided by it;
    default 1). STS-B is always read on its 0–5 scale."""
    positive_score: Fraction | None = None
    """Graded text pairs: a pair counts as "same" (for pair metrics, calibration, contrastive and
    ranking losses) when its scaled score is at least this; default 0.8 for STS-B (4 of 5), 0.5 else."""
    labels: bool = True
    """``false``: read ``data.path`` without its labels (every item its own instance; a pairs file
    gives its texts or images, not its pairs), for label-free losses and pseudo-labels. A flat folder
    of images or a ``.txt`` file of sentences has no labels anyway."""
    unlabelled_path: str | None = None
    """Mixed data: a further folder, zip or sentences file read without labels and added to the
    training items only (never to validation); read in ``data.unlabelled_format``."""
    unlabelled_format: str = "auto"
    """The format of ``data.unlabelled_path`` (``auto``: recognised as for ``data.path``)."""
    exclude_val_texts: bool = False
    """Texts: leave out of the training items every text that also appears in the validation data
    (read without pairs, e.g. sentences for a label-free loss), so that a model is never adapted to
    the very sentences it is then scored on; the run says how many it left out."""
    rotate_classes: bool = False
    """Add each training class rotated by 90°, 180° and 270° as three new classes (Omniglot practice)."""
    skip_bad_images: bool = False
    """Leave out unreadable images (with a warning) instead of stopping with an error."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @field_validator("format", "unlabelled_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        names = ["auto", *DATA_SOURCES.names()]
        if v not in names:
            raise ValueError(f"{v!r} is not a registered data format; known: {', '.join(names)}")
        return v

    @field_validator("path", "val_path", "unlabelled_path")
    @classmethod
    def _data_root(cls, v: str | None) -> str | None:
        from twinnet.runtime import expand_data_path

        return None if v is None else expand_data_path(v)

    @field_validator("val_classes")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("must be in [0, 1)")
        return v


class LossConfig(_Strict):
    name: str = "contrastive"
    params: dict[str, Any] = Field(default_factory=dict)


#: ``train.validation.metric`` of earlier configs → the protocol it meant.
LEGACY_VALIDATION_METRICS = {"roc_auc": "verification", "oneshot": "nway", "signature": "signature",
                             "spearman": "sts"}  # fmt: skip


class ValidationConfig(_Strict):
    protocol: str = "verification"
    """The registered evaluation protocol run on the validation data after each epoch: its primary
    metric (in its direction) chooses the best checkpoint and drives early stopping.
    ``verification`` (ROC AUC on balanced pairs), ``nway`` (N-way K-shot accuracy), ``signature``
    (EER of the writer-independent protocol), ``sts`` (Spearman of similarity with graded scores), …
    (``twinnet evaluate --help`` lists them all)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The protocol's options, e.g. ``{ways: 20, shots: 1, episodes: 400, within_groups: true}``."""
    pairs: Annotated[int, Field(ge=2)] = 2000
    """Balanced same/different validation pairs, for calibration (and ``verification``)."""
    far_targets: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [1e-1, 1e-2, 1e-3])
    """False-accept rates at which thresholds are calibrated and TAR is reported."""
    before_training: bool = False
    """Also validate the starting weights (a pretrained encoder, ``train.init_from``) before the
    first epoch: they are epoch 0, a candidate for the best, so a run that improves on nothing
    saves the model it started from (and ``early_stopping`` counts from there)."""

    @model_validator(mode="before")
    @classmethod
    def _migrate_metric(cls, data: Any) -> Any:
        """Earlier configs said ``metric: oneshot`` with ``ways``/``shots``/``episodes``/
        ``within_groups`` beside it; they mean ``protocol: nway`` with those as ``params``."""
        legacy_options = ("ways", "shots", "episodes", "within_groups")
        if not isinstance(data, dict) or not any(k in data for k in ("metric", *legacy_options)):
            return data
        data = dict(data)
        if not isinstance(data.get("params") or {}, dict):
            return data  # the params field reports that it is not a mapping
        if "metric" not in data:  # e.g. an override train.validation.episodes=50: the protocol's option
            params = dict(data.get("params") or {})
            params.update({k: data.pop(k) for k in legacy_options if k in data})
            data["params"] = params
            return data
        metric = data.pop("metric")
        if not isinstance(metric, str) or metric not in LEGACY_VALIDATION_METRICS:
            raise ValueError(f"metric: {metric!r} is not one of {', '.join(LEGACY_VALIDATION_METRICS)} "
                             "(newer configs name a protocol: train.validation.protocol)")  # fmt: skip
        if "protocol" in data:
            raise ValueError("give train.validation.protocol or the older metric, not both")
        data["protocol"] = LEGACY_VALIDATION_METRICS[metric]
        params = dict(data.get("params") or {})
        for key in ("ways", "shots", "episodes", "within_groups"):
            if key in data:
                value = data.pop(key)
                if data["protocol"] == "nway":
                    params[key] = value
        data["params"] = params
        return data

    @field_validator("protocol")
    @classmethod
    def _registered(cls, v: str) -> str:
        names = PROTOCOLS.names()
        if v not in names:
            raise ValueError(f"{v!r} is not a registered protocol; known: {', '.join(names)}")
        return v


class EarlyStoppingConfig(_Strict):
    patience: PositiveInt | None = 5
    """Epochs without improvement of the primary metric before stopping; ``null`` disables."""
    min_delta: NonNegativeFloat = 0.0


class CollapseConfig(_Strict):
    """The collapse guard: after each epoch the embeddings of a fixed sample of training items are
    measured (mean per-dimension standard deviation, the same of the L2-normalised embeddings times
    √d, and the effective rank) and logged; a run whose normalised spread falls below
    ``min_normalised_std`` or whose effective rank falls below ``min_effective_rank`` is warned
    about (and stopped with ``stop``).
    Label-free losses can collapse to one point and still lower their loss; this sees it."""

    probe_items: NonNegativeInt = 512
    """Training items embedded for the measurement (a fixed seeded sample; 0 switches it off)."""
    min_effective_rank: PositiveFloat = 1.5
    """Below this effective rank (exp of the entropy of the normalised singular values; 1 = all on
    one line) the embeddings count as collapsed."""
    min_normalised_std: NonNegativeFloat = 0.0
    """Below this normalised spread (about 1 for embeddings spread over the sphere, 0 for one point;
    SimSiam's measure) the embeddings count as collapsed. Off (0) by default: a margin loss may
    rightly pack a whole data set into a small cap of the sphere (the Omniglot triplet recipe sits at
    0.05 and classifies well); the self-supervised configs set 0.1, where a cap means collapse."""
    stop: bool = False
    """Stop training (keeping the best epoch so far) when the embeddings collapse."""


class TrainConfig(_Strict):
    seed: Seed = 0
    epochs: PositiveInt = 10
    samples_per_epoch: PositiveInt | None = None
    """What one epoch is: this many pairs (pair losses) or items (batch losses); ``null``: one pass
    over the training data (as many pairs or items as there are training items)."""
    batch_size: PositiveInt = 64
    """Pairs per step, for pair losses."""
    classes_per_batch: Annotated[int, Field(ge=2)] = 16
    """P of a P×K batch, for batch (in-batch mining) losses."""
    items_per_class: Annotated[int, Field(ge=2)] = 4
    """K of a P×K batch."""
    class_weight: NonNegativeFloat = 1.0
    """Weight of the embedding loss on class labels (batch losses)."""
    instance_weight: NonNegativeFloat = 0.0
    """Batch losses: when positive, every item of a P×K batch appears twice, as two differently
    augmented views, and the loss is also applied with each item's two views as the only positives
    (self-supervised instance discrimination), weighted by this. It keeps embeddings general when
    there are few training classes; it needs ``data.augment.enabled``."""
    input_similarity_weight: NonNegativeFloat = 0.0
    """Batch losses on images or vectors: when positive, a term pulls the cosine similarities of
    each batch's embeddings toward those of the inputs themselves (flattened, centred on the batch
    mean), weighted by this, so the embedding keeps what the raw inputs already tell apart on
    classes it never trains on (:mod:`twinnet.losses.input_similarity`)."""
    group_by_length: bool = True
    """Text pairs: batch pairs of similar length together (shuffled by windows and batches), so
    batches pad less; ``false`` gives plain random batches."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: PositiveFloat = 1e-3
    weight_decay: NonNegativeFloat = 1e-4
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    schedule: Literal["constant", "cosine", "step"] = "cosine"
    warmup_steps: NonNegativeInt = 0
    step_epochs: PositiveInt = 10
    """For ``schedule: step``: multiply the rate by ``step_gamma`` every this many epochs."""
    step_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    grad_clip: PositiveFloat | None = 5.0
    """Clip the global gradient norm to this; ``null`` disables clipping."""
    device: str = "auto"
    """``auto`` picks CUDA when present, else CPU; or any torch device string."""
    threads: PositiveInt | None = None
    """CPU threads for torch; ``null`` keeps torch's default."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """The training step's arithmetic: ``auto`` autocasts to bfloat16 on CUDA (float16 without
    bfloat16 support) and stays float32 on the CPU; ``bf16`` autocasts on any device, ``fp16`` on CUDA."""
    dist_timeout_s: PositiveFloat = 1800.0
    """With several processes (torchrun): the longest wait on the others, in seconds, before the run
    fails instead of hanging (rank 0 validates while the others wait)."""
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    progress: bool = True
    max_minutes: PositiveFloat | None = None
    """Stop after the epoch during which this much training time has passed (a budget guard)."""
    wise_ft: Fraction | None = None
    """Weight-space ensembling with the starting weights (WiSE-FT, Wortsman et al. 2022): the saved
    model's floating-point weights are ``wise_ft`` × trained + (1 − ``wise_ft``) × starting, taken
    after the best epoch is restored and before whitening, validation and calibration. For
    fine-tuning a pretrained model, which it keeps closer to where it started; ``null``: off."""
    batch_plan: str | None = None
    """Train from this registered batch plan instead of the loss's own, when it builds the same kind of
    batch: ``pseudo_labels`` (clusters of the model's embeddings as classes) for a P×K loss such as
    ``triplet``; ``null``: the loss's own plan."""
    init_from: str | None = None
    """A saved model (or run) directory whose encoder weights start this run (pretrain without labels,
    then fine-tune with a few); its encoders must match this model's. ``twinnet train --init-from``."""
    collapse: CollapseConfig = Field(default_factory=CollapseConfig)
    plan: dict[str, Any] = Field(default_factory=dict)
    """Options of the loss's batch plan, e.g. ``{max_gap: 100, stills: …}`` for ``tracking_pairs``."""
    loggers: list[str] = Field(default_factory=lambda: ["jsonl"])
    """Where each epoch's record goes: ``jsonl`` (``RUN/metrics.jsonl``), ``tensorboard``
    (``RUN/tensorboard/``), ``mlflow`` (MLflow's local file store ``RUN/mlruns/``), or a registered name."""

    @field_validator("init_from")
    @classmethod
    def _model_path(cls, v: str | None) -> str | None:
        from twinnet.runtime import expand_data_path

        return None if v is None else expand_data_path(v)

    @field_validator("loggers")
    @classmethod
    def _known_loggers(cls, v: list[str]) -> list[str]:
        unknown = [name for name in v if name not in LOGGERS]
        if unknown:
            raise ValueError(f"unknown run logger(s) {', '.join(unknown)}; known: {', '.join(LOGGERS.names())}")
        return v


class Config(_Strict):
    """A whole run: what model, on what data, trained how."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


def format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"{source}: {where}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], source: str = "config") -> Config:
    """Validate a config mapping; any problem is a :class:`ConfigError` naming ``source`` and the keys."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load``, with every failure as one exception type.

    PyYAML's constructors raise whatever Python raises on malformed tagged or implicit scalars
    (``2001-13-45``: ValueError from datetime; ``!!timestamp 3``: AttributeError; ``!!int``:
    IndexError), and deep nesting recurses: all of it means "not valid YAML", so all is caught.
    """
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise _NotYAML(where + str(err.problem or err.context or "malformed YAML")) from None
    except Exception as err:  # see above: any failure of the parser is bad input
        raise _NotYAML(" ".join(str(err).split()) or type(err).__name__) from None


class _NotYAML(Exception):
    pass


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (or ``.json``) config file; errors are :class:`ConfigError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else _load_yaml(text)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file ({err.strerror or err})") from None
    except (_NotYAML, json.JSONDecodeError, RecursionError) as err:
        raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (model, data, loss, train)")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys, e.g. ``train.lr=1e-3``; values are parsed as YAML scalars or lists."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.lr=0.001")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is not a section")
            node = child
        try:
            node[parts[-1]] = _load_yaml(raw)
        except _NotYAML:
            node[parts[-1]] = raw  # not YAML: the text as it is (e.g. data.path=C:{x})
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML/JSON config (or start from defaults) and apply dotted overrides."""
    data = read_config_file(path) if path else {}
    apply_overrides(data, overrides or [])
    return parse_config(data, str(path) if path else "config")


def dump_config(config: BaseModel) -> dict[str, Any]:
    return config.model_dump(mode="json")
