"""The tf_keras (Keras 2) twin of a Keras 3 functional model.

tensorflow-model-optimization only quantizes tf_keras models, so quantization-aware training
runs on a *twin*: the Keras 3 graph is walked node by node, every layer is rebuilt in tf_keras
from its config (with the few config differences between the two Keras versions mapped), the
weights are copied, and the twin is checked to reproduce the original's outputs before anything
else happens to it.

Layers that only kseg defines (registered with ``package="kseg"``) provide their twin through
``TWINS``: a dict from the registered name (``"kseg>SomeLayer"``) to a factory
``factory(layer_k3) -> tf_keras layer``. A layer class may instead define a method
``tf_keras_twin(self)`` that returns the tf_keras layer (it must import tf_keras lazily, inside
the method). The factory's layer is called on the rebuilt inputs and receives the original's
weights with ``set_weights`` unless it defines ``copy_weights_from(layer_k3)``.

Nothing here imports tf_keras at module import time; ``tf_keras_module()`` does it on first use
and leaves ``TF_USE_LEGACY_KERAS`` as it found it.

Example:
    import keras
    from kseg.quantize.twin import to_tf_keras, assert_twin_equal
    twin = to_tf_keras(model)                      # model: a Keras 3 functional model
    diff = assert_twin_equal(model, twin, images)  # max |twin - original| over the batch
"""

from __future__ import annotations

import contextlib
import inspect
import os

import numpy as np

from kseg.errors import KsegError

TWINS: dict = {}
"""Registered name (``"kseg>Name"``) → ``factory(layer_k3) -> tf_keras layer``."""

# Keras 3 config keys that tf_keras layers do not accept and that are harmless to drop
# (any behaviour they carry is caught by the equality check, never silently accepted).
_DROP_ALWAYS = {"quantization_config", "lora_rank", "lora_alpha", "build_config", "synchronized"}


@contextlib.contextmanager
def legacy_keras_env():
    """Import-time guard: whatever tf_keras/tfmot do to ``TF_USE_LEGACY_KERAS`` is undone on exit.

    ``tensorflow_model_optimization`` sets ``TF_USE_LEGACY_KERAS=1`` when imported, which would
    switch ``tf.keras`` to Keras 2 for the rest of the process.
    """
    prev = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        yield
    finally:
        if prev is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = prev


def tf_keras_module():
    """Import and return ``tf_keras`` without changing the process's Keras selection."""
    with legacy_keras_env():
        import tf_keras

    return tf_keras


def register_twin(registered_name: str):
    """Decorator: register ``factory(layer_k3) -> tf_keras layer`` for a custom layer.

    Args:
        registered_name: the Keras registered name, e.g. ``"kseg>MaxUnpooling2D"``.

    Example:
        @register_twin("kseg>MyLayer")
        def _my_layer_twin(layer):
            return make_tf_keras_my_layer(**layer.get_config())
    """

    def wrap(factory):
        TWINS[registered_name] = factory
        return factory

    return wrap


# --------------------------------------------------------------------------------------
# config conversion


def _accepted_kwargs(cls) -> set[str] | None:
    """Keyword names ``cls.__init__`` (and the bases it forwards ``**kwargs`` to) accept."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return None
        has_var_kw = False
        for p in params:
            if p.kind == p.VAR_KEYWORD:
                has_var_kw = True
            elif p.name != "self":
                names.add(p.name)
        if not has_var_kw:
            break
    return names | {"name", "trainable", "dtype"}


def _filter_kwargs(cls, config: dict) -> dict:
    allowed = _accepted_kwargs(cls)
    out = {k: v for k, v in config.items() if k not in _DROP_ALWAYS}
    if allowed is not None:
        out = {k: v for k, v in out.items() if k in allowed}
    return out


def _convert_object(obj, module):
    """A Keras 3 serialized initializer/regularizer/constraint → the tf_keras object (or None)."""
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, dict) and "class_name" in obj:
        cls = getattr(module, obj["class_name"], None)
        if cls is None:
            return None
        try:
            return cls(**_filter_kwargs(cls, obj.get("config") or {}))
        except Exception:  # an unusual object: the twin does not need it to compute outputs
            return None
    return obj


def _dtype_name(dtype) -> str:
    if isinstance(dtype, dict):
        cfg = dtype.get("config") or {}
        name = cfg.get("name", "float32")
        return name
    if dtype is None:
        return "float32"
    return getattr(dtype, "name", str(dtype))


def convert_config(config: dict, tf_keras) -> dict:
    """Map a Keras 3 layer config to one tf_keras accepts (dtype policy, initializers, ...)."""
    out = dict(config)
    if "dtype" in out:
        name = _dtype_name(out["dtype"])
        if name.startswith("mixed_"):
            # tf_keras reads mixed policies by name too; keep them as policies
            out["dtype"] = tf_keras.mixed_precision.Policy(name)
        else:
            out["dtype"] = name
    for key, value in list(out.items()):
        if key.endswith("_initializer"):
            out[key] = _convert_object(value, tf_keras.initializers) or "zeros"
        elif key.endswith("_regularizer"):
            out[key] = _convert_object(value, tf_keras.regularizers)
        elif key.endswith("_constraint"):
            out[key] = _convert_object(value, tf_keras.constraints)
        elif key == "activation" and value in ("hard_silu", "hard_swish"):
            out[key] = _hard_swish  # tf_keras has no hard_silu
        elif isinstance(value, list) and key in (
            "kernel_size", "strides", "dilation_rate", "pool_size", "size", "padding", "cropping"
        ):
            out[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return out


def _hard_swish(x):
    """Keras 3's ``hard_silu``: ``x * relu6(x + 3) / 6`` (TFLite HARD_SWISH)."""
    import tensorflow as tf

    return x * tf.nn.relu6(x + 3.0) / 6.0


def _registered_name(layer) -> str:
    import keras

    return keras.saving.get_registered_name(type(layer))


def make_twin_layer(layer, tf_keras):
    """Build the (unbuilt) tf_keras twin of one Keras 3 layer."""
    name = _registered_name(layer)
    if name in TWINS:
        return TWINS[name](layer)
    hook = getattr(layer, "tf_keras_twin", None)
    if callable(hook):
        return hook()
    cls_name = type(layer).__name__
    module = type(layer).__module__
    if not module.startswith("keras.") and not module.startswith("keras"):
        raise KsegError(
            f"layer {layer.name} ({name}) has no tf_keras twin; register one in "
            "kseg.quantize.twin.TWINS or give the class a tf_keras_twin() method"
        )
    cls = getattr(tf_keras.layers, cls_name, None)
    if cls is None:
        raise KsegError(
            f"layer {layer.name} is a keras.layers.{cls_name}, which tf_keras does not have; "
            "use a layer both Keras versions share or register a twin in kseg.quantize.twin.TWINS"
        )
    config = _filter_kwargs(cls, convert_config(layer.get_config(), tf_keras))
    return cls.from_config(config)


def _copy_weights(src, dst) -> None:
    copy = getattr(dst, "copy_weights_from", None)
    if callable(copy):
        copy(src)
        return
    weights = src.get_weights()
    if len(weights) != len(dst.get_weights()):
        raise KsegError(
            f"layer {src.name}: the tf_keras twin has {len(dst.get_weights())} weights but the "
            f"original has {len(weights)}; the twin factory does not match the layer"
        )
    dst.set_weights(weights)


# --------------------------------------------------------------------------------------
# graph walk


def _is_functional(op) -> bool:
    return hasattr(op, "_nodes_by_depth") and hasattr(op, "inputs") and hasattr(op, "outputs")


class _Builder:
    def __init__(self, tf_keras):
        self.tf_keras = tf_keras
        self.used_names: set[str] = set()
        self.pairs: list = []  # (keras3 layer, tf_keras layer), shared layers only once
        self.made: dict[int, object] = {}

    def unique(self, name: str, prefix: str) -> str:
        if name not in self.used_names:
            self.used_names.add(name)
            return name
        base = f"{prefix}{name}" if prefix else name
        candidate, i = base, 1
        while candidate in self.used_names:
            candidate, i = f"{base}_{i}", i + 1
        self.used_names.add(candidate)
        return candidate

    def layer_for(self, op, prefix: str):
        key = id(op)
        if key not in self.made:
            twin = make_twin_layer(op, self.tf_keras)
            twin._name = self.unique(twin.name if twin.name else op.name, prefix)
            self.made[key] = twin
            self.pairs.append((op, twin))
        return self.made[key]

    def run(self, model, inputs, prefix: str = ""):
        """Rebuild ``model``'s graph on the tf_keras tensors ``inputs`` (a flat list)."""
        import keras

        if isinstance(model, keras.Sequential):
            x = inputs[0]
            for layer in model.layers:
                x = self.call(layer, [x], {}, prefix)
            return [x]
        graph = model
        if not _is_functional(graph):
            raise KsegError(f"model {model.name} is not a functional model; kseg twins need functional graphs")
        tensors = {id(x): y for x, y in zip(graph.inputs, inputs)}
        for depth in sorted(graph._nodes_by_depth.keys(), reverse=True):
            for node in graph._nodes_by_depth[depth]:
                if not node.operation or node.is_input:
                    continue
                if any(id(x) not in tensors for x in node.input_tensors):
                    continue
                args, kwargs = node.arguments.fill_in(tensors)
                outputs = self.call(node.operation, args, kwargs, prefix)
                flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
                for x, y in zip(node.outputs, flat):
                    tensors[id(x)] = y
        missing = [x for x in graph.outputs if id(x) not in tensors]
        if missing:
            raise KsegError(f"model {model.name}: output {missing[0].name} is not connected to its inputs")
        return [tensors[id(x)] for x in graph.outputs]

    def call(self, op, args, kwargs, prefix):
        import keras

        if isinstance(op, keras.Model):
            flat = [a for a in _flatten(args)]
            outs = self.run(op, flat, prefix=f"{prefix}{op.name}/")
            return outs if len(outs) > 1 else outs[0]
        if not isinstance(op, keras.layers.Layer):
            raise KsegError(
                f"operation {op.name} ({type(op).__name__}) is a keras.ops call on symbolic tensors, "
                "not a layer; tf_keras cannot twin it — use the matching keras.layers layer "
                "(e.g. layers.Add instead of x + y)"
            )
        twin = self.layer_for(op, prefix)
        kwargs = {k: v for k, v in kwargs.items() if k not in ("training",)}
        return twin(*args, **kwargs)


def _flatten(x):
    if isinstance(x, (list, tuple)):
        for item in x:
            yield from _flatten(item)
    elif isinstance(x, dict):
        for item in x.values():
            yield from _flatten(item)
    else:
        yield x


def to_tf_keras(model, check_inputs=None, atol: float = 1e-5, rtol: float = 1e-5):
    """Rebuild a Keras 3 functional model in tf_keras with the same weights.

    Nested models (a ``keras.Model`` used as a layer) are flattened into the twin's graph; a
    nested layer whose name clashes with an outer one is renamed ``"submodel/name"``.

    Args:
        model: a Keras 3 functional model (``keras.Model`` built from ``keras.Input``).
        check_inputs: optional array batch; when given, ``assert_twin_equal`` runs on it.
        atol, rtol: the tolerances for that check (see ``assert_twin_equal``).

    Returns:
        A ``tf_keras.Model`` with the same inputs, outputs, layer names and weights.

    Raises:
        KsegError: a layer without a tf_keras counterpart (name it and how to add a twin), or
            (with ``check_inputs``) outputs that differ by more than ``atol``.

    Example:
        twin = to_tf_keras(kseg.models.build_model("unet", num_classes=2, input_shape=(64, 64, 3)))
    """
    tf_keras = tf_keras_module()
    builder = _Builder(tf_keras)
    inputs = []
    for x in model.inputs:
        name = builder.unique(getattr(x, "name", None) or "input", "")
        inputs.append(tf_keras.Input(shape=tuple(x.shape[1:]), dtype=x.dtype, name=name))
    outputs = builder.run(model, inputs)
    twin = tf_keras.Model(
        inputs=inputs if len(inputs) > 1 else inputs[0],
        outputs=outputs if len(outputs) > 1 else outputs[0],
        name=model.name,
    )
    for src, dst in builder.pairs:
        _copy_weights(src, dst)
    if check_inputs is not None:
        assert_twin_equal(model, twin, check_inputs, atol=atol, rtol=rtol)
    return twin


def twin_max_abs_diff(model, twin, x) -> float:
    """Largest ``|twin(x) - model(x)|`` over every output element (inference mode)."""
    a = model(x, training=False)
    b = twin(x, training=False)
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    return max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(a, b))


def assert_twin_equal(model, twin, x, atol: float = 1e-5, rtol: float = 1e-5) -> float:
    """Check that the twin reproduces the original; return the max absolute difference.

    The bound is ``atol + rtol * max|model(x)|``: float32 round-off grows with the outputs'
    magnitude and depth (a ResNet-50 U-Net with outputs near 26 differed by 2.3e-5, i.e. 9e-7
    relative; SegNet trained on CamVid, 26 convolutions deep, by 2.95e-5 at outputs near 7.5, 4e-6
    relative), while a config that did not carry over changes outputs by 1e-3 relative or more.

    Args:
        model: the Keras 3 model.
        twin: its tf_keras twin.
        x: an input batch (float32, the model's input range).
        atol: the absolute part of the bound.
        rtol: the part of the bound relative to the largest output magnitude.

    Raises:
        KsegError: when the difference exceeds the bound.
    """
    diff = twin_max_abs_diff(model, twin, x)
    y = model(x, training=False)
    y = y if isinstance(y, (list, tuple)) else [y]
    bound = atol + rtol * max(float(np.max(np.abs(np.asarray(v)))) for v in y)
    if not diff <= bound:
        raise KsegError(
            f"tf_keras twin of {model.name} differs from the original by {diff:.3g} (> {bound:.3g}); "
            "a layer's config did not carry over — check the layer types the model uses"
        )
    return diff


# --------------------------------------------------------------------------------------
# twins of kseg's custom layers (classes made on first use: tf_keras is imported lazily)

_TWIN_CLASSES: dict = {}


def twin_class(name: str):
    """The tf_keras class that twins kseg layer ``name`` (``"MaxUnpooling2D"``), made once."""
    if name not in _TWIN_CLASSES:
        _TWIN_CLASSES.update(_make_twin_classes(tf_keras_module()))
    return _TWIN_CLASSES[name]


def twin_custom_objects() -> dict:
    """Class name → tf_keras twin class, for loading saved twins/QAT models."""
    twin_class("MaxUnpooling2D")
    return dict(_TWIN_CLASSES)


def _make_twin_classes(tf_keras) -> dict:
    import tensorflow as tf

    class LogitLimit(tf_keras.layers.Layer):
        """tf_keras twin of ``kseg.models.selfie.LogitLimit``."""

        def __init__(self, limit=8.0, **kwargs):
            super().__init__(**kwargs)
            self.limit = float(limit)

        def call(self, x, training=None):
            if training:
                return x
            return tf.clip_by_value(x, -self.limit, self.limit)

        def get_config(self):
            return {**super().get_config(), "limit": self.limit}

    class MaxUnpooling2D(tf_keras.layers.Layer):
        """tf_keras twin of ``kseg.models.blocks.MaxUnpooling2D`` (same ops, same tie rule)."""

        def call(self, inputs):
            y, x = inputs
            x = tf.cast(x, y.dtype)
            a, b = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
            c, d = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
            m = tf.maximum(tf.maximum(a, b), tf.maximum(c, d))
            ea = tf.cast(tf.equal(a, m), y.dtype)
            eb = tf.cast(tf.equal(b, m), y.dtype) * (1.0 - ea)
            ec = tf.cast(tf.equal(c, m), y.dtype) * (1.0 - ea) * (1.0 - eb)
            ed = 1.0 - ea - eb - ec
            ya, yb, yc, yd = y * ea, y * eb, y * ec, y * ed
            shape = tf.shape(y)
            hh, ww, ch = shape[1], shape[2], shape[3]
            top = tf.reshape(tf.stack([ya, yb], axis=3), (-1, hh, 2 * ww, ch))
            bottom = tf.reshape(tf.stack([yc, yd], axis=3), (-1, hh, 2 * ww, ch))
            return tf.reshape(tf.stack([top, bottom], axis=2), (-1, 2 * hh, 2 * ww, ch))

        def compute_output_shape(self, input_shapes):
            y = tf.TensorShape(input_shapes[0])
            dbl = lambda v: None if v is None else 2 * v  # noqa: E731
            return tf.TensorShape([y[0], dbl(y[1]), dbl(y[2]), y[3]])

    return {"MaxUnpooling2D": MaxUnpooling2D, "LogitLimit": LogitLimit}


@register_twin("kseg>MaxUnpooling2D")
def _max_unpooling_twin(layer):
    return twin_class("MaxUnpooling2D")(name=layer.name)


@register_twin("kseg>LogitLimit")
def _logit_limit_twin(layer):
    return twin_class("LogitLimit")(limit=layer.limit, name=layer.name)
