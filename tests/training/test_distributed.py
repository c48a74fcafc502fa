"""Training on several processes: 2 CPU processes (gloo) against one process.

Every start of two processes costs a few seconds (two fresh interpreters importing torch and
twinnet), so the tests start three pairs in all: one under torchrun that checks the mining seam
and then trains (``twinnet train``, as ``torchrun -m twinnet train`` runs it), one killed midway
(started as torchrun starts processes, but without its agent, which would end the survivor), and
``torchrun -m twinnet train … --resume`` of that run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from twinnet.cli import app
from twinnet.config import TrainConfig, load_config
from twinnet.data.items import from_arrays
from twinnet.data.samplers import PKBatchSampler
from twinnet.errors import ConfigError
from twinnet.model import build_model
from twinnet.runtime import seed_everything
from twinnet.train import train_from_config
from twinnet.training.distributed import World, gather, gather_ids
from twinnet.training.plans import PairsPlan

REPO = Path(__file__).resolve().parents[2]

TINY = """
model:
  input: {kind: image, channels: 1, size: [8, 8]}
  encoder: {name: mlp, params: {hidden: [], embedding_dim: 8}}
  comparator: {name: euclidean}
  normalize: true
loss: {name: triplet, params: {margin: 0.5, mining: batch_hard}}
data: {val_classes: 0.25, augment: {enabled: false}}
train: {epochs: 2, samples_per_epoch: 64, classes_per_batch: 4, items_per_class: 4, lr: 0.01, threads: 1,
        schedule: constant, progress: false, validation: {pairs: 40}, early_stopping: {patience: null}}
"""
# (no BatchNorm in the encoder: each process normalises with its own share of the batch, so a model
# with BatchNorm trains like one process only up to those statistics; see the README)


def torchrun(*args: str, nproc: int = 2, **kwargs):
    """``torchrun --standalone --nproc_per_node=nproc ARGS`` as a subprocess (its Popen)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--monitor-interval=0.1", *args]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **kwargs)  # fmt: skip


def launch(*args: str, nproc: int = 2) -> list[subprocess.Popen[str]]:
    """``python ARGS`` as ``nproc`` processes of one run, with the environment torchrun would give them
    (no agent that ends the others when one dies: each process has to notice on its own)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WORLD_SIZE": str(nproc),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}  # fmt: skip
    return [subprocess.Popen([sys.executable, *args], cwd=REPO, env={**env, "RANK": f"{r}", "LOCAL_RANK": f"{r}"},
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for r in range(nproc)]  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def finished(proc, timeout: float = 90) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"torchrun hung for {timeout} s:\n{out}")
    return proc.returncode, out


@pytest.fixture
def images(image_folder_factory):
    return image_folder_factory(classes=8, per_class=6, size=8)


# -- sharding (no processes needed: a World says which share is whose) ------------------------------


def test_pk_shards_are_distinct_classes_that_make_up_the_one_process_batch():
    labels = np.repeat(np.arange(10), 5)
    sampler = PKBatchSampler(labels, classes_per_batch=6, items_per_class=3, batches_per_epoch=4, seed=3)
    for batch in sampler.epoch(0):
        shards = [sampler.shard(batch, r, 3) for r in range(3)]
        classes = [set(labels[s].tolist()) for s in shards]
        assert all(len(c) == 2 for c in classes) and not (classes[0] & classes[1] or classes[1] & classes[2])
        np.testing.assert_array_equal(np.concatenate(shards), batch)  # in rank order: the whole batch
    np.testing.assert_array_equal(sampler.epoch(1)[0], sampler.epoch(1)[0])  # reproducible per seed


def test_pair_shards_are_disjoint_and_make_up_the_one_process_batch(monkeypatch):
    # item i is the vector (i, i): a batch's inputs say which items it holds
    items = from_arrays(np.repeat(np.arange(40, dtype=np.float32)[:, None], 2, 1), np.repeat(np.arange(8), 5))
    config = TrainConfig(batch_size=8, samples_per_epoch=32)

    def pairs(rank: int, size: int) -> list[np.ndarray]:
        monkeypatch.setattr(World, "current", classmethod(lambda cls: cls(rank, size)))
        batches = [job() for job in PairsPlan(items, None, config).epoch_jobs(0)]
        return [np.stack([b.inputs_a[:, 0].numpy(), b.inputs_b[:, 0].numpy(), b.same.numpy()], 1) for b in batches]

    one, ranks = pairs(0, 1), [pairs(r, 2) for r in range(2)]
    for step, whole in enumerate(one):
        for r in range(2):  # every other pair of the one-process batch: disjoint, and together the batch
            np.testing.assert_array_equal(ranks[r][step], whole[r::2])
    monkeypatch.setattr(World, "current", classmethod(lambda cls: cls(0, 16)))
    with pytest.raises(ConfigError, match="train.batch_size is 8, fewer than the 16 training processes"):
        PairsPlan(items, None, config)


def test_one_process_gathers_nothing():
    z = torch.ones(3, 2, requires_grad=True)
    assert gather(z, None)[0] is z and gather_ids(torch.arange(3)).tolist() == [0, 1, 2]


# -- the global batch at the loss seam, training like one process; a killed process, --resume --------

WORKER = """
import json, sys
import torch
from twinnet.losses import TripletLoss
from twinnet.mining import batch_hard_triplets
from twinnet.model import build_model
from twinnet.config import ModelConfig
from twinnet.training import LabelledBatch
from twinnet.training.distributed import gather, gather_ids, setup

world = setup("cpu", timeout_s=60)
torch.manual_seed(0)
x_all, labels_all = torch.randn(16, 6), torch.arange(4).repeat_interleave(4)  # P=4 classes x K=4
model = build_model(ModelConfig.model_validate({"input": {"kind": "vector", "features": 6},
    "encoder": {"name": "mlp", "params": {"hidden": [], "embedding_dim": 3}}, "comparator": {"name": "euclidean"}}))
mine = slice(8 * world.rank, 8 * world.rank + 8)  # two classes each
z, labels = gather(model.embed(x_all[mine]), labels_all[mine])
_, _, negatives = batch_hard_triplets(torch.cdist(z, z), labels)
loss = TripletLoss(margin=1.0).compute(model, LabelledBatch(x_all[mine], labels_all[mine]))
loss.backward()
ids = gather_ids(torch.arange(4).repeat(2))
json.dump({"negatives": negatives.tolist(), "loss": loss.item(), "ids": ids.tolist(),
           "grads": [p.grad.tolist() for p in model.parameters()]}, open(f"{sys.argv[1]}.{world.rank}", "w"))

# then the same processes train, as `torchrun -m twinnet train ARGS` does (it leaves the process group)
from twinnet.cli import main
sys.argv = ["twinnet", "train", *sys.argv[2:]]
main()
"""


TOLERANCE = 1e-5
"""Largest absolute difference allowed between the weights of the 2-process and the 1-process run
after 8 steps (float32; the two sum the gradient's rows in another order)."""


def test_two_processes_mine_and_train_like_one_process_with_the_same_global_batch(tmp_path, images):
    from twinnet.config import ModelConfig
    from twinnet.losses import TripletLoss
    from twinnet.mining import batch_hard_triplets
    from twinnet.training import LabelledBatch

    script, cfg = tmp_path / "worker.py", tmp_path / "tiny.yaml"
    script.write_text(textwrap.dedent(WORKER))
    cfg.write_text(TINY)
    proc = torchrun(str(script), str(tmp_path / "out"), "--data", str(images), "--out", str(tmp_path / "two"),
                    "--config", str(cfg), "--json")  # fmt: skip
    # meanwhile, the same on one process: the mining seam, then the training run
    torch.manual_seed(0)
    x_all, labels_all = torch.randn(16, 6), torch.arange(4).repeat_interleave(4)
    model = build_model(ModelConfig.model_validate({"input": {"kind": "vector", "features": 6}, "comparator": {
        "name": "euclidean"}, "encoder": {"name": "mlp", "params": {"hidden": [], "embedding_dim": 3}}}))  # fmt: skip
    z = model.embed(x_all)
    _, _, negatives = batch_hard_triplets(torch.cdist(z, z), labels_all)
    loss = TripletLoss(margin=1.0).compute(model, LabelledBatch(x_all, labels_all))
    loss.backward()
    one = train_from_config(load_config(cfg, [f"data.path={images}"]), tmp_path / "one")
    code, out = finished(proc)
    assert code == 0, out

    # mining across the processes: the hardest negatives, the loss and the gradient of one process
    ranks = [json.loads((tmp_path / f"out.{r}").read_text()) for r in range(2)]
    for r in ranks:
        assert r["negatives"] == negatives.tolist()  # the same hardest negative for every anchor
        assert r["loss"] == pytest.approx(loss.item(), abs=1e-6)
    # ids of process 1 come after process 0's rows: the two processes' instances stay apart
    assert ranks[0]["ids"] == [0, 1, 2, 3, 0, 1, 2, 3, 8, 9, 10, 11, 8, 9, 10, 11]
    # what DDP does next (the mean of the processes' gradients) is the one-process gradient
    for i, p in enumerate(model.parameters()):
        mean = (torch.tensor(ranks[0]["grads"][i]) + torch.tensor(ranks[1]["grads"][i])) / 2
        torch.testing.assert_close(mean, p.grad, atol=1e-6, rtol=1e-5)

    # training: the weights of one process with the same global batch
    assert one.history[-1]["step"] == 8
    summary = json.loads(out[out.index("{") : out.rindex("}") + 1])  # printed by rank 0 only
    assert out.count('"best_epoch"') == 1 and summary["epochs_run"] == 2
    two, ref = (load_file(str(tmp_path / d / "checkpoints/last/model.safetensors")) for d in ("two", "one"))
    assert set(two) == set(ref)
    for key in ref:
        assert float((two[key] - ref[key]).abs().max()) <= TOLERANCE, key
    seed_everything(0)  # the initial weights, as train_from_config builds them: training moved them
    initial = build_model(load_config(cfg).model).state_dict()
    assert max(float((ref[k] - initial[k]).abs().max()) for k in ref) > 1e-3
    records = (tmp_path / "two/metrics.jsonl").read_text().splitlines()
    assert len(records) == 2  # one line per epoch, from rank 0 only
    assert json.loads(records[-1])["train_loss"] == pytest.approx(one.history[-1]["train_loss"], abs=1e-5)
    assert (tmp_path / "two/model/twinnet.json").is_file()
    state = json.loads((tmp_path / "two/checkpoints/last/state.json").read_text())
    assert state["world_size"] == 2
    # resuming it on one process says why it cannot, in one line
    result = CliRunner().invoke(app, ["train", "--data", str(images), "--out", str(tmp_path / "two"), "--config",
                                      str(cfg), "--resume", "train.epochs=3"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "trained on 2 processes, this run has 1 process" in result.output and "Traceback" not in result.output


def test_a_killed_process_fails_the_run_cleanly_and_resume_continues(tmp_path, images):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run = tmp_path / "run"
    args = ["-m", "twinnet", "train", "--data", str(images), "--out", str(run), "--config", str(cfg),
            "train.epochs=40", "train.dist_timeout_s=20"]  # fmt: skip
    procs = launch(*args)  # no torchrun agent: the survivor has to notice on its own
    state = run / "checkpoints/last/state.json"
    deadline = time.monotonic() + 300  # (the processes' start is slow on a busy machine)
    while not state.exists() and procs[1].poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert state.exists() and procs[1].poll() is None, "no process to kill after an epoch"
    procs[1].kill()
    started = time.monotonic()
    code, out = finished(procs[0], timeout=60)
    finished(procs[1])
    assert code == 2 and time.monotonic() - started < 30, out  # fails, well before the 20 s timeout too
    assert "Traceback" not in out, out
    assert "rank 0 of 2: lost contact with the other training processes" in out and "--resume" in out, out
    done = json.loads(state.read_text())["epoch"]
    assert 1 <= done < 40
    # torchrun -m twinnet train … --resume: one epoch more (to keep the test short)
    code, out = finished(torchrun(*args, "--resume", f"train.epochs={done + 1}"))
    assert code == 0, out
    assert f"resumed from {run / 'checkpoints/last'} after epoch {done}" in out.replace("\n", "")
    assert json.loads(state.read_text())["epoch"] == done + 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == done + 1  # every epoch logged once


def test_a_process_that_resumes_from_another_epoch_than_rank_0_says_so(tmp_path, monkeypatch):
    import twinnet.train
    from twinnet import Trainer, TripletLoss
    from twinnet.config import ModelConfig
    from twinnet.errors import DataError

    items = from_arrays(np.random.default_rng(0).normal(size=(24, 4)).astype(np.float32), np.repeat(np.arange(6), 4))
    spec = {"input": {"kind": "vector", "features": 4}, "comparator": {"name": "euclidean"},
            "encoder": {"name": "mlp", "params": {"hidden": [], "embedding_dim": 2}}}  # fmt: skip
    config = TrainConfig(epochs=1, samples_per_epoch=16, classes_per_batch=4, items_per_class=2, progress=False)
    Trainer(build_model(ModelConfig.model_validate(spec)), TripletLoss(), items, config, run_dir=tmp_path).fit()
    # rank 0 (broadcasting) read another checkpoint than this process: not a shared --out
    monkeypatch.setattr(twinnet.train, "broadcast", lambda value, device: value + 3)
    trainer = Trainer(build_model(ModelConfig.model_validate(spec)), TripletLoss(), items,
                      config.model_copy(update={"epochs": 2}), run_dir=tmp_path)  # fmt: skip
    with pytest.raises(DataError, match="resumes after epoch 1, rank 0 after epoch 4: every process must read the"):
        trainer.fit(resume=True)
