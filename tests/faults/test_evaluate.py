"""``kseg evaluate``/``predict`` with a ``--size`` a fixed-size model cannot take: one line, exit 2
(kseg/evaluate.py)."""

import pytest

from kseg.cli import main

from .conftest import shapes_dataset


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory):
    from kseg.models import build_model

    root = tmp_path_factory.mktemp("fixed")
    model = build_model("unet", filters=4, depth=2, num_classes=3, input_shape=(64, 64, 3))
    model.save(root / "m.keras")
    shapes_dataset(root / "shapes", n=4)
    return root


@pytest.mark.parametrize("verb", ["evaluate", "predict"])
def test_size_a_fixed_model_cannot_take(fixed_model, capsys, fault, verb, tmp_path):
    data = fixed_model / "shapes"
    args = [str(data), "--format", "masks"] if verb == "evaluate" else [str(data / "images" / "0000.png"),
                                                                         "--out", str(tmp_path / "p")]
    rc = main([verb, str(fixed_model / "m.keras"), *args, "--size", "100", "100"])
    err = capsys.readouterr().err.strip().splitlines()
    fault.check(f"kseg {verb} --size 100 100 on a 64×64 model", "exit 2, one line naming the model's size",
                f"exit {rc}: {err}",
                rc == 2 and len(err) == 1 and "takes a fixed 64×64 input" in err[0] and "--size 64 64" in err[0])
    assert not list(tmp_path.glob("p/*"))  # nothing predicted
