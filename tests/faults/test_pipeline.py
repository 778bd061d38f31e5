"""Files only the decoder finds corrupt, during training (kseg/data/pipeline.py, kseg/train.py).

``data.on_error: fail`` names the file in one line (was: "internal error: InvalidArgumentError:
Graph execution error"); ``skip`` counts and names the skipped samples once (was: silence).
"""

import pytest

from kseg.cli import main

from .conftest import kseg_lines, shapes_dataset


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    """A shapes dataset whose image 0007.png has a valid header and end but garbage inside."""
    root = shapes_dataset(tmp_path_factory.mktemp("corrupt"), n=12)
    p = root / "images" / "0007.png"
    data = bytearray(p.read_bytes())
    data[60:200] = b"\0" * 140
    p.write_bytes(bytes(data))
    return root


def test_pipeline_names_what_the_decoder_skipped(corrupt, fault):
    from kseg.data.pipeline import decode_failure, decode_report, make_dataset
    from kseg.data.readers import open_dataset

    ds = open_dataset(corrupt, "masks")
    batches = make_dataset(ds, size=(32, 32), batch_size=4, training=False)
    n = sum(int(x.shape[0]) for x, _ in batches)
    line, again = decode_report(batches), decode_report(batches)
    fault.check("pipeline skip: corrupt PNG inside", "11 of 12 decoded, named once",
                f"{n} decoded: {line!r}, then {again!r}",
                n == 11 and "skipped 1 of 12" in line and "0007.png cannot be decoded" in line and again is None)
    batches = make_dataset(ds, size=(32, 32), batch_size=4, training=False, on_error="fail")
    with pytest.raises(Exception) as e:
        for _ in batches:
            pass
    why = decode_failure(batches)
    fault.check("pipeline fail: corrupt PNG inside", "the file named", f"{type(e.value).__name__}: {why}",
                why is not None and "0007.png cannot be decoded" in why)


def _config(tmp_path, data, on_error, epochs=2):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"name: c\nout_dir: {tmp_path / 'runs'}\nmodel: {{name: unet, kwargs: {{filters: 4, depth: 2}}}}\n"
        f"data:\n  train: [{{path: '{data}', format: masks}}]\n  val_fraction: 0.25\n  size: [32, 32]\n"
        f"  batch_size: 4\n  on_error: {on_error}\n"
        f"train: {{epochs: {epochs}, verbose: 0, early_stop_patience: null}}\n"
    )
    return cfg


def test_train_on_error_fail_names_the_file(tmp_path, corrupt, capsys, fault):
    rc = main(["train", "--config", str(_config(tmp_path, corrupt, "fail"))])
    err = capsys.readouterr().err
    lines = kseg_lines(err)
    fault.check("train data.on_error: fail, corrupt PNG", "exit 2, one line naming 0007.png",
                f"exit {rc}: {lines}", rc == 2 and len(lines) == 1 and "0007.png cannot be decoded" in lines[0]
                and "data.on_error" in lines[0])


def test_train_on_error_skip_names_skipped_samples_once(tmp_path, corrupt, capsys, fault):
    rc = main(["train", "--config", str(_config(tmp_path, corrupt, "skip"))])
    err = capsys.readouterr().err
    said = [ln for ln in kseg_lines(err) if "skipped" in ln]
    fault.check("train data.on_error: skip, corrupt PNG", "exit 0, 'skipped 1 of N ... 0007.png' once in 2 epochs",
                f"exit {rc}: {said}", rc == 0 and len(said) == 1 and "0007.png" in said[0])
