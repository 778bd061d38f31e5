"""Model files and their cards: the contract between ``kseg.export`` and the runtime.

Every exported ``NAME.tflite`` has a model card ``NAME.json`` beside it (format
``CARD_FORMAT``): task, classes, input and output tensors and how to feed and read them. This
module reads cards and checks ``.tflite`` files (identifier, truncation, operator list); it
imports neither Keras nor TensorFlow.

Example:
    from kseg.runtime.cards import read_card, tflite_ops, nonbuiltin_ops
    card = read_card("exports/portrait.tflite")
    assert not nonbuiltin_ops(tflite_ops("exports/portrait.tflite"))
"""

from __future__ import annotations

import json
from pathlib import Path

from kseg.errors import KsegError

TFLITE_IDENTIFIER = b"TFL3"
CARD_FORMAT = "kseg-model-card/1"

__all__ = ["CARD_FORMAT", "TFLITE_IDENTIFIER", "card_path", "check_tflite_file", "nonbuiltin_ops", "read_card",
           "tflite_ops"]


def card_path(model_path) -> Path:
    """The model card of ``exports/NAME.tflite`` is ``exports/NAME.json``."""
    return Path(model_path).with_suffix(".json")


def read_card(model_path) -> dict | None:
    """The model card beside ``model_path`` (``NAME.json``, else ``classes.json``), or ``None``."""
    p = Path(model_path)
    for candidate in (card_path(p), p.with_name("classes.json")):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text())
            except (OSError, ValueError) as e:
                raise KsegError(f"model card {candidate} is not valid JSON ({e}); re-export the model") from None
    return None


def card_task(path):
    """The ``task`` of the model card beside ``path``, or None (no card, unreadable card)."""
    try:
        return json.loads(card_path(path).read_text()).get("task")
    except (OSError, ValueError, AttributeError):
        return None


def check_tflite_file(path) -> Path:
    """Raise ``KsegError`` unless ``path`` is a readable, complete-looking TFLite flatbuffer."""
    p = Path(path)
    if not p.is_file():
        raise KsegError(f"model file {p} not found; give the path of a .tflite or .keras file")
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != TFLITE_IDENTIFIER:
        raise KsegError(
            f"{p} is not a TFLite model (no 'TFL3' identifier in its header); "
            "export one with kseg export or check the path"
        )
    root = int.from_bytes(head[:4], "little")
    if root >= size:
        raise KsegError(f"{p} is truncated ({size} bytes); copy or export it again")
    return p


def tflite_ops(path) -> list[str]:
    """The operator names in a ``.tflite`` file (builtin names, custom/Flex ops by their code).

    Example:
        tflite_ops("exports/x.tflite")  # ['CONV_2D', 'DEPTHWISE_CONV_2D', 'ADD', ...]
    """
    from ai_edge_litert import schema_py_generated as schema

    p = check_tflite_file(path)
    buf = p.read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        if code == schema.BuiltinOperator.CUSTOM:
            custom = oc.CustomCode()
            codes.append(custom.decode() if isinstance(custom, bytes) else str(custom))
        else:
            codes.append(names.get(code, f"BUILTIN_{code}"))
    used = []
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for j in range(sg.OperatorsLength()):
            used.append(codes[sg.Operators(j).OpcodeIndex()])
    return used


def nonbuiltin_ops(ops) -> list[str]:
    """The ops (sorted, distinct) the LiteRT runtime cannot run as builtins: Flex (select TF) and custom ops.

    Example:
        nonbuiltin_ops(["CONV_2D", "FlexErf", "MyOp"])   # ['FlexErf', 'MyOp']
    """
    return sorted({op for op in ops if op.startswith("Flex") or not op.isupper()})
