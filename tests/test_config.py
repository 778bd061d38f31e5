import pytest

from kseg.config import RunConfig, load_config, resolve_data_path, save_config
from kseg.errors import KsegError


def test_defaults_and_overrides():
    cfg = load_config(None, ["name=x", "train.epochs=3", "data.size=[128, 192]",
                             "model.kwargs.encoder=efficientnet_lite0", "train.learning_rate=5e-4"])
    assert isinstance(cfg, RunConfig)
    assert cfg.name == "x"
    assert cfg.train.epochs == 3
    assert cfg.data.size == (128, 192)
    assert cfg.model.kwargs == {"encoder": "efficientnet_lite0"}
    assert cfg.train.learning_rate == pytest.approx(5e-4)


def test_yaml_round_trip(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(
        "model: {name: unet, kwargs: {filters: 8}}\n"
        "data:\n  train: [{path: camvid, format: camvid, split: train}]\n  size: [64, 96]\n"
    )
    cfg = load_config(p)
    assert cfg.name == "run"  # from the file name
    assert cfg.data.train[0].format == "camvid"
    assert cfg.data.train[0].options == {"split": "train"}
    save_config(cfg, tmp_path / "again.yaml")
    again = load_config(tmp_path / "again.yaml")
    assert again == cfg


def test_unknown_key_names_it_and_suggests(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train: {epocs: 3}\n")
    with pytest.raises(KsegError, match=r"unknown config key train\.epocs \(did you mean 'epochs'\?\)"):
        load_config(p)


def test_bad_override_and_missing_file(tmp_path):
    with pytest.raises(KsegError, match="expected key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(KsegError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "broken.yaml").write_text("train: [1, 2\n")
    with pytest.raises(KsegError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_resolve_data_path(tmp_path, monkeypatch):
    monkeypatch.setenv("KSEG_DATA", str(tmp_path))
    (tmp_path / "camvid").mkdir()
    assert resolve_data_path("camvid") == tmp_path / "camvid"
    with pytest.raises(KsegError, match="dataset folder nothere not found"):
        resolve_data_path("nothere")


SHIPPED_CONFIGS = sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", [p for p in SHIPPED_CONFIGS if not p.name.startswith("mask_rcnn")],
                         ids=lambda p: p.name)
def test_every_shipped_semantic_config_loads(path):
    """The configs behind docs/results.md parse with the strict schema and name a zoo model."""
    from kseg.models import MODELS

    cfg = load_config(path)
    assert cfg.model.name in MODELS
    assert cfg.name == path.stem  # runs/NAME matches the file the docs cite
    # a multiple of the encoder's stride: 32, or 16 for the portrait models' truncated encoders
    # (portrait_tiny_landscape: 144x256); each model checks its own multiple when built
    assert all(s % 16 == 0 for s in cfg.data.size)


def test_train_verbose_is_auto_by_default_and_checked():
    assert load_config(None).train.verbose == "auto"  # a bar on a terminal, lines in a log (kseg.progress)
    assert load_config(None, ["train.verbose=1"]).train.verbose == 1
    for bad in ("true", "3", "bar"):
        with pytest.raises(KsegError, match=r"config train.verbose must be auto \(a bar on a terminal"):
            load_config(None, [f"train.verbose={bad}"])


def test_export_float_ops(tmp_path):
    """export.float_ops: a list of TFLite op names (or one comma-separated string); anything
    else is one line naming the key."""
    p = tmp_path / "run.yaml"
    p.write_text("export: {float_ops: [BATCH_MATMUL, ' SOFTMAX']}\n")
    cfg = load_config(p)
    assert cfg.export.float_ops == ["BATCH_MATMUL", "SOFTMAX"]
    save_config(cfg, tmp_path / "again.yaml")
    assert load_config(tmp_path / "again.yaml").export == cfg.export
    assert load_config(None, ["export.float_ops=MEAN,RSQRT"]).export.float_ops == ["MEAN", "RSQRT"]
    assert load_config(None).export.float_ops == []
    p.write_text("export: {float_ops: 5}\n")
    with pytest.raises(KsegError, match=r"export\.float_ops must be a list of names"):
        load_config(p)
