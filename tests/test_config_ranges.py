"""Every number of a config has a valid range: out of it, the error names the key (pydantic's
message through ``format_validation_error``), so nothing trains or evaluates on a meaningless setting."""

from pathlib import Path

import pytest

from twinnet.config import apply_overrides, load_config, parse_config
from twinnet.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

OUT_OF_RANGE = [
    ("model.input.size", [0, 8], "model.input.size.0: Input should be greater than 0"),
    ("model.input.features", 0, "model.input.features: Input should be greater than 0"),
    ("model.input.length", -1, "model.input.length: Input should be greater than 0"),
    ("model.input.max_length", 0, "model.input.max_length: Input should be greater than 0"),
    ("data.class_depth", 0, "data.class_depth: Input should be greater than 0"),
    ("data.val_classes", 1.0, "data.val_classes: Value error, must be in [0, 1)"),
    ("data.score_max", 0, "data.score_max: Input should be greater than 0"),
    ("data.positive_score", 1.5, "data.positive_score: Input should be less than or equal to 1"),
    ("data.augment.rotation", -10, "data.augment.rotation: Input should be greater than or equal to 0"),
    ("data.augment.shear", -0.1, "data.augment.shear: Input should be greater than or equal to 0"),
    ("data.augment.scale", [0, 1.2], "data.augment.scale.0: Input should be greater than 0"),
    ("data.augment.scale", [1.2, 0.8], "data.augment.scale: Value error, the smallest scale comes first"),
    ("data.augment.translate", 2, "data.augment.translate: Input should be less than or equal to 1"),
    ("data.augment.probability", -0.5, "data.augment.probability: Input should be greater than or equal to 0"),
    ("train.seed", -1, "train.seed: Input should be greater than or equal to 0"),
    ("train.epochs", -5, "train.epochs: Input should be greater than 0"),
    ("train.epochs", 0, "train.epochs: Input should be greater than 0"),
    ("train.samples_per_epoch", 0, "train.samples_per_epoch: Input should be greater than 0"),
    ("train.batch_size", 0, "train.batch_size: Input should be greater than 0"),
    ("train.classes_per_batch", 1, "train.classes_per_batch: Input should be greater than or equal to 2"),
    ("train.items_per_class", 1, "train.items_per_class: Input should be greater than or equal to 2"),
    ("train.class_weight", -1, "train.class_weight: Input should be greater than or equal to 0"),
    ("train.instance_weight", -0.5, "train.instance_weight: Input should be greater than or equal to 0"),
    ("train.lr", 0, "train.lr: Input should be greater than 0"),
    ("train.lr", -1e-3, "train.lr: Input should be greater than 0"),
    ("train.lr", float("nan"), "train.lr: Input should be a finite number"),
    ("train.lr", float("inf"), "train.lr: Input should be a finite number"),
    ("train.weight_decay", -1e-4, "train.weight_decay: Input should be greater than or equal to 0"),
    ("train.momentum", 1.0, "train.momentum: Input should be less than 1"),
    ("train.warmup_steps", -1, "train.warmup_steps: Input should be greater than or equal to 0"),
    ("train.step_epochs", 0, "train.step_epochs: Input should be greater than 0"),
    ("train.step_gamma", 0, "train.step_gamma: Input should be greater than 0"),
    ("train.grad_clip", 0, "train.grad_clip: Input should be greater than 0"),
    ("train.threads", 0, "train.threads: Input should be greater than 0"),
    ("train.max_minutes", 0, "train.max_minutes: Input should be greater than 0"),
    ("train.validation.pairs", 1, "train.validation.pairs: Input should be greater than or equal to 2"),
    ("train.validation.far_targets", [0.1, 0], "train.validation.far_targets.1: Input should be greater than 0"),
    ("train.validation.far_targets", [1.0], "train.validation.far_targets.0: Input should be less than 1"),
    ("train.early_stopping.patience", 0, "train.early_stopping.patience: Input should be greater than 0"),
    ("train.early_stopping.min_delta", -0.1, "train.early_stopping.min_delta: Input should be greater than or equal"),
]


def nested(key, value):
    data = {}
    node = data
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


@pytest.mark.parametrize(("key", "value", "message"), OUT_OF_RANGE, ids=[f"{k}={v}" for k, v, _ in OUT_OF_RANGE])
def test_an_out_of_range_number_is_a_config_error_naming_the_key(key, value, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(nested(key, value), "run.yaml")
    assert str(caught.value).startswith(f"run.yaml: {message}")


def test_the_edges_of_each_range_are_valid():
    augment = {"rotation": 180, "probability": 0, "scale": [1, 1]}
    train = {"seed": 0, "epochs": 1, "classes_per_batch": 2, "items_per_class": 2, "momentum": 0, "warmup_steps": 0,
             "step_gamma": 1, "instance_weight": 0, "weight_decay": 0, "grad_clip": None, "max_minutes": None,
             "validation": {"pairs": 2}, "early_stopping": {"patience": None}}  # fmt: skip
    cfg = parse_config({"data": {"val_classes": 0, "positive_score": 1, "augment": augment}, "train": train})
    assert cfg.train.epochs == 1 and cfg.data.augment.scale == (1.0, 1.0)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_within_range(path):
    load_config(path)


@pytest.mark.parametrize("value", ["2001-13-45", "!!int x", "!!timestamp 3", "!!int"])
def test_yaml_values_pyyaml_cannot_construct_are_config_errors(tmp_path, value):
    # PyYAML raised ValueError, AttributeError or IndexError for these, not YAMLError: a traceback
    f = tmp_path / "c.yaml"
    f.write_text(f"train:\n  seed: {value}\n")
    with pytest.raises(ConfigError, match="c.yaml: not valid YAML/JSON"):
        load_config(f)
    # an override that is not YAML is taken as text, which the schema then judges
    assert apply_overrides({}, [f"data.path={value}"]) == {"data": {"path": value}}
    with pytest.raises(ConfigError, match="train.seed: Input should be a valid integer"):
        load_config(None, [f"train.seed={value}"])


def test_yaml_syntax_errors_name_the_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 0.1\n  epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=r"c.yaml: not valid YAML/JSON: line 4, column 1: "):
        load_config(f)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"train:\n  lr: \xff\n")
    with pytest.raises(ConfigError, match=r"b.yaml: not UTF-8 text"):
        load_config(binary)


@pytest.mark.parametrize(
    "validation",
    [{"metric": ["oneshot"]}, {"metric": "oneshot", "params": 5}, {"ways": 5, "params": [1]}],
    ids=["metric-list", "params-number", "params-list"],
)
def test_malformed_legacy_validation_sections_are_config_errors(validation):
    # the migration of `metric: oneshot` raised TypeError on these before the schema could judge them
    with pytest.raises(ConfigError, match="train.validation"):
        parse_config({"train": {"validation": validation}})
