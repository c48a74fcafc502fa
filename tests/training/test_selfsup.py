"""Training without labels: the views plan, pseudo-labels, the collapse guard, init-from, and the
unlabelled data sources, end to end on tiny data."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score
from typer.testing import CliRunner

from twinnet import Trainer, build_model, from_arrays, load
from twinnet.cli import app
from twinnet.config import AugmentConfig, ModelConfig, TrainConfig, parse_config
from twinnet.data.items import as_unlabelled, join_items
from twinnet.data.pairs import Pairs
from twinnet.data.sources import read_dataset
from twinnet.data.text import text_items
from twinnet.data.transforms import RandomAffine
from twinnet.errors import ConfigError, DataError
from twinnet.io import init_encoders, save
from twinnet.losses import LOSSES, TripletLoss
from twinnet.train import train_from_config
from twinnet.training import ViewsBatch
from twinnet.training.plans import build_plan, delete_words, plan_for
from twinnet.training.pseudo_labels import PseudoLabelPlan, kmeans_labels
from twinnet.training.spread import effective_rank, embedding_spread, spread

IMAGE_MODEL = {
    "input": {"kind": "image", "channels": 1, "size": [16, 16]},
    "encoder": {"name": "conv4", "params": {"hidden": 8, "blocks": 2, "embedding_dim": 8}},
    "comparator": {"name": "cosine"},
    "normalize": True,
}
AUGMENT = {"enabled": True, "rotation": 10, "translate": 0.1}


def flat_folder(root: Path, n: int = 24, seed: int = 0) -> Path:
    from tests.conftest import make_shape_image

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(make_shape_image(i % 4, rng, 16)).save(root / f"img_{i:03d}.png")
    return root


def image_items(n: int = 24):
    from tests.conftest import make_shape_image

    rng = np.random.default_rng(0)
    x = np.stack([make_shape_image(i % 4, rng, 16)[None] for i in range(n)])
    return from_arrays(x, np.arange(n) % 4)


def tiny_config(**train):
    base = dict(epochs=2, batch_size=8, lr=1e-3, progress=False, early_stopping={"patience": None})
    base.update(train)
    return TrainConfig(**base)


# -- the views plan ---------------------------------------------------------------------------------


def test_views_plan_gives_two_different_views_of_the_same_items_and_hides_missing_labels() -> None:
    items = join_items(image_items(8), as_unlabelled(image_items(8)))
    plan = build_plan("views", items, None, tiny_config(), augment=RandomAffine(AugmentConfig(**AUGMENT)))
    assert plan.steps_per_epoch == 2
    batches = [job() for job in plan.epoch_jobs(0)]
    assert all(isinstance(b, ViewsBatch) for b in batches)
    labels = torch.cat([b.labels for b in batches]).numpy()
    assert sorted(labels[labels >= 0].tolist()) == sorted((np.arange(8) % 4).tolist())
    assert (labels == -1).sum() == 8  # the unlabelled half carries no label
    b = batches[0]
    assert b.view_a.shape == b.view_b.shape and not torch.equal(b.view_a, b.view_b)
    again = [job() for job in build_plan("views", items, None, tiny_config(),
                                          augment=RandomAffine(AugmentConfig(**AUGMENT))).epoch_jobs(0)]  # fmt: skip
    assert torch.equal(again[0].view_a, b.view_a)  # the same seed and epoch: the same views


def test_views_plan_refuses_images_without_augmentation_and_pairs_files() -> None:
    items = image_items(8)
    with pytest.raises(ConfigError, match="augment"):
        build_plan("views", items, None, tiny_config())
    pairs = Pairs(np.array([0, 1]), np.array([2, 3]), np.array([True, False]))
    with pytest.raises(ConfigError, match="data.labels: false"):
        build_plan("views", items, pairs, tiny_config(), augment=RandomAffine(AugmentConfig(**AUGMENT)))


def test_text_views_delete_words_reproducibly() -> None:
    rng = np.random.default_rng(0)
    assert delete_words("one", 0.9, rng) == "one"
    kept = delete_words("a b c d e f g h", 0.99, rng)
    assert len(kept.split()) >= 1
    items = as_unlabelled(text_items(["the cat sat on the mat", "a dog ran in the park", "birds fly south"]))
    config = tiny_config(batch_size=3, plan={"word_deletion": 0.3})
    first = build_plan("views", items, None, config).epoch_jobs(0)[0]()
    second = build_plan("views", items, None, config).epoch_jobs(0)[0]()
    assert first.view_a == second.view_a and first.view_b == second.view_b
    assert first.view_a != first.view_b  # the two views deleted different words
    with pytest.raises(ConfigError, match="word_deletion"):
        build_plan("views", items, None, tiny_config(plan={"word_deletion": 1.5}))


def test_batch_plan_override_must_build_the_same_kind_of_batch() -> None:
    assert plan_for("pk", tiny_config(batch_plan="pseudo_labels"), "TripletLoss") == "pseudo_labels"
    assert plan_for("pk", tiny_config(), "TripletLoss") == "pk"
    with pytest.raises(ConfigError, match="ViewsBatch"):
        plan_for("pk", tiny_config(batch_plan="views"), "TripletLoss")


# -- pseudo-labels ----------------------------------------------------------------------------------


class _Identity(torch.nn.Module):
    """A 'model' whose embeddings are its inputs, so clustering sees the raw vectors."""

    is_half_twin = False

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def embed(self, x, side="a"):
        return x


def test_pseudo_labels_recover_known_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 10, (5, 6))
    truth = np.repeat(np.arange(5), 30)
    x = (centres[truth] + rng.normal(0, 0.5, (150, 6))).astype(np.float32)
    items = as_unlabelled(from_arrays(x, truth))
    assert adjusted_rand_score(truth, kmeans_labels(x, 5, seed=0)) == 1.0
    plan = PseudoLabelPlan(items, None, tiny_config(classes_per_batch=4, items_per_class=4), clusters=5)
    plan.before_epoch(_Identity(), 0)
    assert plan.assigned is not None and adjusted_rand_score(truth, plan.assigned) == 1.0
    batch = plan.epoch_jobs(0)[0]()
    assert len(np.unique(batch.labels.numpy())) == 4  # P clusters × K items
    # the assignment survives a checkpoint (a resumed run trains on the clusters it had)
    state = json.loads(json.dumps(plan.state_dict()))
    fresh = PseudoLabelPlan(items, None, tiny_config(classes_per_batch=4, items_per_class=4), clusters=5)
    fresh.load_state_dict(state)
    assert np.array_equal(fresh.assigned, plan.assigned)


def test_pseudo_labels_keep_real_labels_of_mixed_data() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (40, 4)).astype(np.float32)
    labelled = from_arrays(x[:10], np.arange(10) % 2)
    items = join_items(labelled, as_unlabelled(from_arrays(x[10:], np.zeros(30))))
    plan = PseudoLabelPlan(items, None, tiny_config(classes_per_batch=2, items_per_class=2), clusters=3)
    plan.before_epoch(_Identity(), 0)
    assert plan.assigned is not None
    assert np.array_equal(plan.assigned[:10], np.arange(10) % 2)
    assert set(plan.assigned[10:]) <= {2, 3, 4}


def test_triplet_trains_on_pseudo_labels_through_the_trainer() -> None:
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 1, (24, 16))[np.arange(240) // 10] + rng.normal(0, 0.3, (240, 16))).astype(np.float32)
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate({"input": {"kind": "vector", "features": 16}, "encoder": {
        "name": "mlp", "params": {"hidden": [32], "embedding_dim": 8}}}))  # fmt: skip
    config = tiny_config(batch_plan="pseudo_labels", plan={"clusters": 12, "every": 2}, epochs=3,
                         classes_per_batch=8, items_per_class=4, samples_per_epoch=256)  # fmt: skip
    trainer = Trainer(model, TripletLoss(margin=0.2), as_unlabelled(from_arrays(x, np.zeros(240))), config)
    result = trainer.fit()
    assert isinstance(trainer.plan, PseudoLabelPlan) and trainer.plan.clustered_at == 2  # epochs 0 and 2
    assert len(result.history) == 3 and all(np.isfinite(h["train_loss"]) for h in result.history)


# -- collapse guard ---------------------------------------------------------------------------------


def test_effective_rank_by_hand() -> None:
    line = torch.arange(10.0)[:, None] * torch.tensor([[1.0, 2.0, 3.0]])
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    square = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    assert effective_rank(square) == pytest.approx(2.0, abs=1e-6)  # two equal singular values
    assert effective_rank(torch.ones(5, 3)) == 0.0
    assert spread(torch.ones(5, 3))["embedding_std"] == 0.0 and spread(torch.ones(5, 3))["normalised_std"] == 0.0
    sphere = torch.nn.functional.normalize(torch.randn(4000, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    assert spread(sphere)["normalised_std"] == pytest.approx(1.0, abs=0.02)


def test_a_collapsing_run_is_warned_about_and_stopped(caplog) -> None:
    # invariance alone (no variance or covariance term) has a trivial optimum: one point for everything
    loss = LOSSES.build("vicreg", {"variance": 0.0, "covariance": 0.0})
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate(IMAGE_MODEL))
    guard = {"stop": True, "min_normalised_std": 0.1}
    config = tiny_config(epochs=30, lr=0.05, collapse=guard, samples_per_epoch=256, batch_size=32)
    trainer = Trainer(model, loss, image_items(64), config, augment=AugmentConfig(**AUGMENT))
    untrained = embedding_spread(model, image_items(64), trainer.probe)["normalised_std"]
    with caplog.at_level(logging.WARNING):
        result = trainer.fit()
    assert untrained > 0.1 > result.history[-1]["normalised_std"]
    # the effective rank alone would not have seen it: one point plus small isotropic noise
    assert result.history[-1]["effective_rank"] > 1.5
    assert result.stopped_early and len(result.history) < 30
    assert any("collapsing" in r.getMessage() and "normalised_std" in r.getMessage() for r in caplog.records)


def test_a_healthy_run_logs_its_spread_without_warning(caplog) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig.model_validate(IMAGE_MODEL))
    trainer = Trainer(model, LOSSES.build("ntxent", {}), image_items(), tiny_config(), augment=AugmentConfig(**AUGMENT))
    with caplog.at_level(logging.WARNING):
        result = trainer.fit()
    assert all(h["effective_rank"] > 1.5 and h["normalised_std"] > 0.1 for h in result.history)
    assert not any("collapsing" in r.getMessage() for r in caplog.records)


# -- end to end: data sources, BYOL saved model, init-from, CLI -------------------------------------


def run_config(data: Path, loss: dict, **extra):
    train = {"epochs": 2, "batch_size": 8, "progress": False, "early_stopping": {"patience": None}}
    train.update(extra.pop("train", {}))
    return parse_config({"model": IMAGE_MODEL, "data": {"path": str(data), "augment": AUGMENT, **extra},
                         "loss": loss, "train": train})  # fmt: skip


def test_flat_folder_is_read_unlabelled_and_trains_without_validation(tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "flat")
    data = read_dataset(folder, ModelConfig.model_validate(IMAGE_MODEL).input)
    assert data.format == "unlabelled_images"
    assert len(data.items) == 24 and not data.items.labelled.any()
    assert len(np.unique(data.items.labels)) == 24  # every image its own instance
    result = train_from_config(run_config(folder, {"name": "ntxent"}), tmp_path / "run")
    assert result.validation == {} and (tmp_path / "run" / "model").is_dir()
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["effective_rank"] > 1


def test_byol_saves_only_the_online_encoder_and_embeds_as_it_does(tmp_path: Path) -> None:
    folder = flat_folder(tmp_path / "flat")
    result = train_from_config(run_config(folder, {"name": "byol", "params": {"projector": [16, 8]}}), tmp_path / "run")
    saved = load(tmp_path / "run" / "model")
    x = torch.rand(5, 1, 16, 16)
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(saved.embed(x), result.model.embed(x), atol=1e-6)
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "run" / "model" / "weights.safetensors")).keys()
    assert keys and all(k.startswith(("encoder.", "comparator.")) for k in keys)  # no target, projector, predictor
    skeleton = (tmp_path / "run" / "checkpoints" / "last" / "loss.json").read_text()
    assert '"target.target.0.encoder.' in skeleton  # the momentum target is in the checkpoint: resumable


def test_labelled_folder_read_without_labels_and_mixed_data(tmp_path: Path, image_folder_factory) -> None:
    labelled = image_folder_factory(classes=4, per_class=6)
    flat = flat_folder(tmp_path / "flat", n=10)
    config = run_config(labelled, {"name": "ntxent"}, labels=False, val_classes=0.0)
    result = train_from_config(config, tmp_path / "a")
    assert result.validation == {}
    from twinnet.training.data import load_datasets

    mixed = load_datasets(run_config(labelled, {"name": "ntxent"}, unlabelled_path=str(flat), val_classes=0.25))
    items = mixed.train.items
    assert items.labelled.sum() == 18 and (~items.labelled).sum() == 10  # 3 of 4 classes trained, plus 10 unlabelled
    assert mixed.val is not None and mixed.val.items.labelled.all() and len(mixed.val.items) == 6


def test_sentences_file_is_read_unlabelled(tmp_path: Path) -> None:
    path = tmp_path / "s.txt"
    path.write_text("the first sentence, with a comma\n\nthe second one\n", encoding="utf-8")
    data = read_dataset(path, parse_config({"model": {"input": {"kind": "text"}}}).model.input)
    assert data.format == "sentences"
    assert data.items.texts == ["the first sentence, with a comma", "the second one"]
    assert data.items.names[1].endswith(":3") and not data.items.labelled.any()
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    spec = parse_config({"model": {"input": {"kind": "text"}}}).model.input
    with pytest.raises(DataError, match="no sentences"):
        read_dataset(tmp_path / "empty.txt", spec, "sentences")


def test_exclude_val_texts_leaves_the_validation_sentences_out_of_training(tmp_path: Path, caplog) -> None:
    from twinnet.training.data import load_datasets

    (tmp_path / "train.txt").write_text("a cat sits\na dog runs\nthe sun is hot\n", encoding="utf-8")
    (tmp_path / "more.txt").write_text("a dog runs\nrain falls\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("text_a\ttext_b\tscore\nthe sun is hot\ta star is hot\t0.8\n"
                                      "rain falls\tit rains\t0.9\n", encoding="utf-8")  # fmt: skip

    def data(**extra):
        return parse_config({"model": {"input": {"kind": "text"}},
                             "data": {"path": str(tmp_path / "train.txt"), **extra}})  # fmt: skip

    both = {"unlabelled_path": str(tmp_path / "more.txt"), "val_path": str(tmp_path / "dev.tsv")}
    assert len(load_datasets(data(**both)).train.items) == 5  # off by default
    with caplog.at_level(logging.WARNING):
        split = load_datasets(data(**both, exclude_val_texts=True))
    assert split.train.items.texts == ["a cat sits", "a dog runs", "a dog runs"]  # from both files
    assert not split.train.items.labelled.any() and split.val is not None and len(split.val.pairs) == 2
    assert "left out 2 of 5 training texts" in caplog.text
    with pytest.raises(ConfigError, match="no validation text to exclude"):
        load_datasets(data(exclude_val_texts=True))
    with pytest.raises(ConfigError, match="training texts read without pairs"):
        load_datasets(data(path=str(tmp_path / "dev.tsv"), val_path=str(tmp_path / "dev.tsv"), exclude_val_texts=True))


def test_init_from_starts_the_encoder_from_a_saved_model_and_refuses_another(tmp_path: Path) -> None:
    torch.manual_seed(0)
    donor = build_model(ModelConfig.model_validate(IMAGE_MODEL))
    save(donor, tmp_path / "donor")
    torch.manual_seed(1)
    model = build_model(ModelConfig.model_validate(IMAGE_MODEL))
    init_encoders(model, tmp_path / "donor")
    for a, b in zip(donor.encoder.state_dict().values(), model.encoder.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    other = build_model(ModelConfig.model_validate({**IMAGE_MODEL, "encoder": {"name": "conv4", "params": {
        "hidden": 16, "blocks": 2, "embedding_dim": 8}}}))  # fmt: skip
    with pytest.raises(ConfigError, match="train.init_from.*not this model's"):
        init_encoders(other, tmp_path / "donor", field="train.init_from")
    with pytest.raises(ConfigError, match="train.init_from"):
        init_encoders(other, tmp_path / "nowhere", field="train.init_from")


def test_cli_pretrains_without_labels_then_fine_tunes_with_init_from(tmp_path: Path, image_folder_factory) -> None:
    flat = flat_folder(tmp_path / "flat")
    labelled = image_folder_factory(classes=10, per_class=6)  # 8 classes to train, 2 to validate
    cfg = tmp_path / "ssl.yaml"
    cfg.write_text(json.dumps({"model": IMAGE_MODEL, "data": {"augment": AUGMENT}, "loss": {"name": "simsiam",
                   "params": {"projector": [16, 16]}}, "train": {"epochs": 1, "batch_size": 8}}))  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(app, ["train", "--data", str(flat), "--out", str(tmp_path / "pre"), "--config", str(cfg),
                                "--quiet"])  # fmt: skip
    assert first.exit_code == 0, first.output
    fine = tmp_path / "fine.yaml"
    fine.write_text(json.dumps({"model": IMAGE_MODEL, "loss": {"name": "triplet"},
                                "train": {"epochs": 1, "classes_per_batch": 2, "items_per_class": 2}}))  # fmt: skip
    second = runner.invoke(app, ["train", "--data", str(labelled), "--out", str(tmp_path / "fine"), "--config",
                                 str(fine), "--init-from", str(tmp_path / "pre"), "--quiet"])  # fmt: skip
    assert second.exit_code == 0, second.output
    logged = (tmp_path / "fine" / "config.yaml").read_text()
    assert "init_from" in logged and str(tmp_path / "pre") in logged
    bad = runner.invoke(app, ["train", "--data", str(labelled), "--out", str(tmp_path / "bad"), "--config",
                              str(fine), "--init-from", str(tmp_path / "missing"), "--quiet"])  # fmt: skip
    assert bad.exit_code == 2 and "train.init_from" in bad.output and "Traceback" not in bad.output
