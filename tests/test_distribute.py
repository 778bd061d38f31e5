"""kseg.distribute: TF_CONFIG, replica scaling, and two local workers against one process."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kseg.distribute import Worker, for_replicas, read_tf_config, scaled_learning_rate, write_dir
from kseg.errors import KsegError

TWO = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}


def test_tf_config_names_the_chief():
    assert read_tf_config({}) == Worker()
    w1 = read_tf_config({"TF_CONFIG": json.dumps({**TWO, "task": {"type": "worker", "index": 1}})})
    assert w1 == Worker("worker", 1, 2, chief=False) and w1.label == "worker 1"
    assert read_tf_config({"TF_CONFIG": json.dumps({**TWO, "task": {"type": "worker", "index": 0}})}).chief
    # with a chief task, worker 0 is not the chief
    cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"]}
    w0 = read_tf_config({"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})})
    assert not w0.chief and w0.count == 3
    with pytest.raises(KsegError, match="is not in its cluster"):
        read_tf_config({"TF_CONFIG": json.dumps({**TWO, "task": {"type": "worker", "index": 2}})})
    with pytest.raises(KsegError, match="TF_CONFIG is not"):
        read_tf_config({"TF_CONFIG": "{nope"})


def test_global_batch_and_learning_rate_follow_the_replicas():
    from kseg.config import load_config

    cfg = load_config(None, ["data.batch_size=8", "train.learning_rate=0.001"])
    four = for_replicas(cfg, 4)
    assert four.data.batch_size == 32 and four.train.learning_rate == pytest.approx(0.004)
    assert cfg.data.batch_size == 8 and for_replicas(cfg, 1) is cfg
    assert scaled_learning_rate(0.001, 4, "sqrt") == pytest.approx(0.002)
    assert scaled_learning_rate(0.001, 4, "none") == 0.001
    with pytest.raises(KsegError, match="lr_scaling"):
        scaled_learning_rate(0.001, 4, "cubic")
    with pytest.raises(KsegError, match="unknown train.lr_scaling 'cubic'"):
        for_replicas(load_config(None, ["train.lr_scaling=cubic"]), 1)


def test_a_worker_restores_the_chiefs_backup(tmp_path):
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    (run / "backup" / "latest.weights.h5").write_bytes(b"w")
    (run / "best_score.txt").write_text("0.5\n")
    assert write_dir(run, Worker()) == run
    out = write_dir(run, Worker("worker", 1, 2, chief=False))
    assert out == run / "workertemp_1"
    assert (out / "backup" / "training_metadata.json").read_text() == '{"epoch": 3, "batch": 0}'
    assert (out / "best_score.txt").read_text() == "0.5\n"


# --------------------------------------------------------------------------------------
# two local worker processes


def _config(tmp_path, shapes, name, epochs=2, steps=3):
    # Crops at scale 1 without rotation: no padded (ignored) pixels, so the mean over each
    # replica's valid pixels, averaged over replicas, is the mean over the global batch
    # (docs/distributed.md); SGD, unlike Adam, would show a wrongly scaled gradient.
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(
        f"name: {name}\nout_dir: {tmp_path / 'runs'}\n"
        "model: {name: unet, kwargs: {filters: 4, depth: 2}}\n"
        f"data:\n  train: [{{path: '{shapes}', format: masks}}]\n  val_fraction: 0.25\n"
        "  size: [32, 32]\n  batch_size: 2\n  augment: {scale: [1.0, 1.0], rotate: 0}\n"
        f"train: {{epochs: {epochs}, steps_per_epoch: {steps}, optimizer: sgd, learning_rate: 0.05, "
        "verbose: 2, early_stop_patience: null}\n"
    )
    return cfg


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    env.pop("TF_CONFIG", None)
    return env


def _weights(path):
    from kseg.models.saving import load_model

    return load_model(path).get_weights()


def test_two_workers_train_the_weights_of_one_process_with_the_global_batch(tmp_path, shapes):
    from kseg.cli import main

    cfg = _config(tmp_path, shapes, "two", epochs=1, steps=4)
    r = subprocess.run([sys.executable, "-m", "kseg", "train", "--config", str(cfg), "--workers", "2"],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "[worker 0] multi_worker strategy: 2 replicas (2 workers, this is worker 0); global batch 4 = 2 x 2; " \
           "learning rate 0.1 (linear scaling of 0.05)" in r.stdout
    assert "[worker 1] multi_worker strategy: 2 replicas" in r.stdout
    run = tmp_path / "runs" / "two"
    for f in ("best.keras", "last.keras", "history.csv", "curves.png", "config.yaml", "backup"):
        assert (run / f).exists(), f
    assert not (run / "workertemp_1").exists()  # the other worker's files are gone

    # one process, the global batch (4) and the scaled learning rate (0.1), same seed
    assert main(["train", "--config", str(cfg), "--set", "name=one", "--set", "data.batch_size=4",
                 "--set", "train.learning_rate=0.1", "--set", "train.verbose=0"]) == 0
    two, one = _weights(run / "last.keras"), _weights(tmp_path / "runs" / "one" / "last.keras")
    assert len(two) == len(one)
    for a, b in zip(two, one):
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)


def _start(cfg):
    return subprocess.Popen([sys.executable, "-m", "kseg", "train", "--config", str(cfg), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _pids(proc):
    line = proc.stdout.readline()
    while "worker pids" not in line:
        assert line, "the launcher ended before starting its workers"
        line = proc.stdout.readline()
    return {int(k): int(v) for k, v in (p.split("=") for p in line.split("worker pids")[1].strip().split(", "))}


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purpose
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def test_ctrl_c_stops_every_worker(tmp_path, shapes):
    proc = _start(_config(tmp_path, shapes, "int"))
    pids = _pids(proc)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "kseg: interrupted"
    deadline = time.time() + 30
    while any(_alive(p) for p in pids.values()) and time.time() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in pids.values())


@pytest.mark.slow
def test_a_killed_worker_stops_the_run_and_a_restart_resumes_from_the_backup(tmp_path, shapes):
    cfg = _config(tmp_path, shapes, "kill", epochs=8, steps=2)
    run = tmp_path / "runs" / "kill"
    meta = run / "backup" / "training_metadata.json"
    proc = _start(cfg)
    pids = _pids(proc)
    deadline = time.time() + 400
    while time.time() < deadline:
        if meta.exists() and json.loads(meta.read_text() or "{}").get("epoch", 0) >= 2:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no backup after epoch 2")
    os.kill(pids[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("kseg: error: worker 1 of 2 failed (killed by SIGKILL") and "stopped the other" in last
    assert not _alive(pids[0])
    done = json.loads(meta.read_text())["epoch"]
    assert 2 <= done < 8

    # the same command again: both workers restore the chief's backup and finish the epochs left
    r = subprocess.run([sys.executable, "-m", "kseg", "train", "--config", str(cfg), "--workers", "2"],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"Epoch {done + 1}/8" in r.stdout and "Epoch 1/8" not in r.stdout
    import csv

    epochs = [int(row["epoch"]) for row in csv.DictReader(open(run / "history.csv"))]
    assert epochs[-1] == 7 and set(epochs) == set(range(8))
    assert json.loads(meta.read_text())["epoch"] == 8


def test_sharding_keeps_the_skipped_file_tally(monkeypatch):
    """on_error: skip under multi_worker still reports the files it dropped (the tally travels)."""
    import tensorflow as tf

    from kseg import distribute

    class FakeMultiWorker:  # stands in for the strategy class: only the isinstance check matters
        pass

    monkeypatch.setattr(tf.distribute, "MultiWorkerMirroredStrategy", FakeMultiWorker)
    ds = tf.data.Dataset.range(4)
    ds._kseg_tally = tally = object()
    sharded = distribute.shard_by_data(ds, FakeMultiWorker())
    assert sharded is not ds
    assert sharded._kseg_tally is tally
    assert sharded.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.DATA
