"""Whitening fitted after training (twinnet.whitening): the within-class covariance against
scikit-learn's, the transform's algebra, the model applying it, the trainer fitting it, and it
travelling with a saved model and an ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from twinnet import Trainer, TripletLoss, build_model, from_arrays, load, save
from twinnet.config import ModelConfig, TrainConfig, ValidationConfig
from twinnet.errors import ConfigError, DataError
from twinnet.metrics import calc_eer
from twinnet.whitening import WCCN, WHITENINGS, Centring, build_whitening, within_class_covariance


def labelled(n_classes=6, per_class=12, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (n_classes, dim))
    # within-class variation far larger along the first axis: what WCCN scales down
    noise = rng.normal(0, 1, (n_classes * per_class, dim)) * np.array([3.0, 1.0, 0.5, 0.5, 0.2])[:dim]
    return centres.repeat(per_class, 0) + noise, np.arange(n_classes).repeat(per_class)


def test_within_class_covariance_matches_scikit_learn():
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = labelled()
    x[y == 2] += 1.5  # classes of different spread
    x, y = x[:-5], y[:-5]  # and of different sizes: pooled, weighted by class size
    lda = LinearDiscriminantAnalysis(solver="lsqr", store_covariance=True).fit(x, y)
    # scikit-learn weights each class's covariance by its prior, the share of items: the pooled one
    np.testing.assert_allclose(within_class_covariance(x, y), lda.covariance_, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shrinkage", [1e-6, 0.3, 1.0])
def test_wccn_maps_the_shrunk_within_class_covariance_to_the_identity(shrinkage):
    x, y = labelled()
    w = WCCN(dim=5, shrinkage=shrinkage)
    w.fit(torch.from_numpy(x), y)
    m = w.matrix.double().numpy()
    np.testing.assert_allclose(m, m.T, atol=1e-10)
    cov = within_class_covariance(x, y)
    s = (1 - shrinkage) * cov + shrinkage * np.trace(cov) / 5 * np.eye(5)
    np.testing.assert_allclose(m @ s @ m, np.eye(5), atol=1e-5)
    np.testing.assert_allclose(w.mean.double().numpy(), x.mean(0), atol=1e-6)
    whitened = w(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(whitened.mean(0), 0, atol=1e-4)
    if shrinkage < 0.01:  # no shrinkage: the whitened items vary equally in every direction within a class
        np.testing.assert_allclose(within_class_covariance(whitened, y), np.eye(5), atol=1e-4)


def test_wccn_separates_classes_better_than_the_raw_embeddings():
    x, y = labelled(n_classes=20, per_class=10, seed=3)
    test_x, test_y = labelled(n_classes=20, per_class=10, seed=4)  # other classes, same nuisance axis
    w = WCCN(dim=5, shrinkage=0.1)
    w.fit(x, y)

    def eer(z, labels):
        z = F.normalize(torch.as_tensor(z, dtype=torch.float32), dim=1)
        s = (z @ z.T).numpy()
        i, j = np.triu_indices(len(z), 1)
        same = labels[i] == labels[j]
        return calc_eer(s[i, j], same)[0]

    raw = eer(test_x, test_y)
    whitened = eer(w(torch.from_numpy(test_x).float()), test_y)
    assert whitened < raw - 0.03, (raw, whitened)


def test_centring_subtracts_the_mean_and_an_unfitted_whitening_is_the_identity():
    x, _ = labelled()
    c = Centring(dim=5)
    z = torch.from_numpy(x).float()
    assert torch.equal(c(z), z) and not bool(c.fitted)
    c.fit(x)  # no labels needed
    torch.testing.assert_close(c(z), z - torch.from_numpy(x.mean(0)).float())


def test_bad_settings_and_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match="shrinkage"):
        build_whitening("wccn", {"shrinkage": 0.0}, 4)
    with pytest.raises(ConfigError, match="unknown whitening 'pca'"):
        build_whitening("pca", {}, 4)
    with pytest.raises(ConfigError, match="unknown parameter"):
        build_whitening("centre", {"shrinkage": 0.5}, 4)
    with pytest.raises(ConfigError, match="dim"):
        build_whitening("wccn", {"dim": 3}, 4)
    w = WCCN(dim=5)
    with pytest.raises(ConfigError, match="at least two classes"):
        w.fit(np.random.default_rng(0).normal(size=(10, 5)), np.arange(10))
    with pytest.raises(DataError, match="5-dimensional"):
        w.fit(np.zeros((10, 4)), np.arange(10) % 2)
    with pytest.raises(DataError, match="NaN"):
        w.fit(np.full((10, 5), np.nan), np.arange(10) % 2)
    assert set(WHITENINGS.names()) >= {"centre", "wccn"}


def vector_config(whitening=None, **kw):
    return ModelConfig.model_validate({
        "input": {"kind": "vector", "features": 5},
        "encoder": {"name": "mlp", "params": {"hidden": [16], "embedding_dim": 6}},
        "comparator": {"name": "cosine"}, "normalize": True, **({"whitening": whitening} if whitening else {}), **kw,
    })  # fmt: skip


def test_the_model_whitens_normalised_embeddings_and_normalises_again():
    torch.manual_seed(0)
    model = build_model(vector_config({"name": "wccn", "params": {"shrinkage": 0.5}})).eval()
    x, y = labelled()
    xt = torch.from_numpy(x).float()
    with torch.no_grad():
        plain = model.embed(xt)
        torch.testing.assert_close(plain, F.normalize(model.encoder(xt), dim=1))  # unfitted: the identity
        model.whitening.fit(plain, y)
        got = model.embed(xt)
        expected = F.normalize((plain - model.whitening.mean) @ model.whitening.matrix, dim=1)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, plain, atol=1e-3)
    with torch.no_grad():  # the side module (a momentum tower's copy) does the same
        torch.testing.assert_close(model.side_module("a")(xt), got)


def test_a_half_twin_is_refused():
    cfg = vector_config({"name": "centre"}, encoder_b={"name": "mlp", "params": {"hidden": [16], "embedding_dim": 6}})
    with pytest.raises(ConfigError, match="only for twins"):
        build_model(cfg)


def test_save_and_load_keep_the_fitted_whitening(tmp_path):
    torch.manual_seed(0)
    model = build_model(vector_config({"name": "wccn"})).eval()
    x, y = labelled()
    xt = torch.from_numpy(x).float()
    save(model, tmp_path / "plain")
    with torch.no_grad():
        model.whitening.fit(model.embed(xt), y)
        ref = model.embed(xt)
    save(model, tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert bool(loaded.whitening.fitted)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(xt), ref)
    assert loaded.fingerprint != load(tmp_path / "plain").fingerprint  # galleries of the unwhitened model refuse it


def test_the_trainer_fits_it_after_training_and_calibrates_on_whitened_embeddings(tmp_path):
    x, y = labelled(n_classes=16, per_class=10)
    vx, vy = labelled(n_classes=8, per_class=10, seed=1)
    train, val = from_arrays(x.astype(np.float32), y), from_arrays(vx.astype(np.float32), vy)
    torch.manual_seed(0)
    model = build_model(vector_config({"name": "wccn", "params": {"shrinkage": 0.5}}))
    cfg = TrainConfig(epochs=2, samples_per_epoch=128, classes_per_batch=8, items_per_class=4, lr=1e-3,
                      progress=False, validation=ValidationConfig(pairs=300))  # fmt: skip
    trainer = Trainer(model, TripletLoss(0.3), train, cfg, val_items=val, run_dir=tmp_path / "run")
    result = trainer.fit()
    assert bool(model.whitening.fitted)
    # fitted on the training items as the trained model embeds them without it
    w = WCCN(dim=6, shrinkage=0.5)
    model.eval().whitening.fitted.fill_(False)
    with torch.no_grad():
        w.fit(model.embed(torch.from_numpy(x).float()), y)
    unwhitened = trainer.validate()
    model.whitening.fitted.fill_(True)
    torch.testing.assert_close(model.whitening.matrix, w.matrix)
    # validation figures and the stored threshold are the whitened model's, not the plain one's
    whitened = trainer.validate()
    assert result.validation == whitened.figures() != unwhitened.figures()
    assert result.calibration is not None
    loaded = load(tmp_path / "run" / "model")
    assert bool(loaded.whitening.fitted) and loaded.calibration.points["default"].threshold == pytest.approx(
        result.calibration.points["default"].threshold
    )
    assert loaded.metrics["validation"] == result.validation


def test_the_trainer_refuses_data_that_cannot_fit_it_before_training():
    x = np.random.default_rng(0).normal(size=(20, 5)).astype(np.float32)
    model = build_model(vector_config({"name": "wccn"}))
    cfg = TrainConfig(epochs=1, samples_per_epoch=16, progress=False)
    with pytest.raises(ConfigError, match="at least two classes"):
        Trainer(model, TripletLoss(0.3), from_arrays(x, np.arange(20)), cfg)


def test_an_onnx_export_applies_the_whitening(tmp_path):
    pytest.importorskip("onnxruntime")
    from twinnet.onnx.export import export_onnx

    torch.manual_seed(0)
    model = build_model(vector_config({"name": "wccn"})).eval()
    x, y = labelled()
    xt = torch.from_numpy(x).float()
    with torch.no_grad():
        model.whitening.fit(model.embed(xt), y)
        ref = model.embed(xt)
    meta = export_onnx(model, tmp_path / "onnx")
    assert meta["whitening"]["name"] == "wccn"
    served = load(tmp_path / "onnx", runtime="onnx")
    with torch.no_grad():
        assert (served.embed(xt) - ref).abs().max().item() < 1e-5


def test_a_whitening_that_needs_classes_is_fitted_on_the_labelled_items_only():
    from twinnet.data.items import as_unlabelled, join_items
    from twinnet.embedding import fit_whitening

    x, y = labelled()
    strangers = np.random.default_rng(9).normal(0, 5, (30, 5))  # unlabelled: each its own class
    items = join_items(from_arrays(x.astype(np.float32), y),
                       as_unlabelled(from_arrays(strangers.astype(np.float32), np.zeros(30, int))))  # fmt: skip
    torch.manual_seed(0)
    model = build_model(vector_config({"name": "wccn"})).eval()
    with torch.no_grad():
        reference = WCCN(dim=6)
        reference.fit(model.embed(torch.from_numpy(x).float()), y)
    fit_whitening(model, items)
    torch.testing.assert_close(model.whitening.matrix, reference.matrix)
    torch.testing.assert_close(model.whitening.mean, reference.mean)
