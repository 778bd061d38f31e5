"""Case 9 of issue 16: a file that exists but is not a model (kseg/models/saving.py).

Expected: one line saying the file is not a .keras model (not "File not found" for a file that is
there): ``kseg.models.saving.load_keras_file`` checks ``zipfile.is_zipfile`` before Keras.
"""

import pytest

from kseg.cli import main

from .conftest import kseg_lines, shapes_dataset


@pytest.mark.parametrize("content", [b"hello\n", bytes(range(256)) * 20], ids=["text", "binary"])
def test_a_file_that_is_not_a_model(tmp_path, capsys, fault, content):
    data = shapes_dataset(tmp_path / "shapes", n=4)
    path = tmp_path / "model.keras"
    path.write_bytes(content)
    rc = main(["evaluate", str(path), str(data), "--format", "masks"])
    lines = kseg_lines(capsys.readouterr().err)
    fault.check(f"evaluate a {len(content)}-byte file that is not a model", "exit 2, 'not a .keras model', "
                "no 'File not found'", f"exit {rc}: {lines}",
                rc == 2 and len(lines) == 1 and "not found" not in lines[0].lower() and "not a" in lines[0])
