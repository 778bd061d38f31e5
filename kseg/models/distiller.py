"""Soft-target distillation: a student model trained on the labels and on a teacher's pixel
probabilities (``train.distill`` in a config).

Hinton et al., "Distilling the Knowledge in a Neural Network" (2015), per pixel as in Liu et al.,
"Structured Knowledge Distillation for Semantic Segmentation" (CVPR 2019, its pixel-wise term):

    loss = (1 − α) · L_labels(y, s) + α · T² · mean_pixels KL(softmax(t / T) ‖ softmax(s / T))

``s`` and ``t`` are the student's and the teacher's logits for the same (augmented) batch; the
teacher is frozen and runs in inference mode inside the training step. The teacher term covers
every pixel, also those the labels ignore (255): there the student learns only from the teacher.
Unlike labelling frames with a teacher's hard decisions (``kseg.distill``), the student sees how
sure the teacher is, which is most of what a small model can learn from a larger one on the same
data (the teacher's "dark knowledge" at edges and on ambiguous regions).

``Distiller`` is a training wrapper, never saved as such: ``kseg.models.saving.single_output``
returns its student, which is what ``best.keras`` and ``last.keras`` hold.

Example:
    model = Distiller(student, teacher, alpha=0.5, temperature=2.0)
    model.compile(optimizer="adam", loss=kseg.losses.get_loss("ce"), metrics=[...])
    model.fit(train_ds, ...)            # then model.student.save("student.keras")
"""

from __future__ import annotations

import keras
from keras import ops

from kseg.errors import KsegError


def soft_target_loss(teacher_logits, student_logits, temperature: float = 1.0):
    """``T² · mean over pixels of KL(softmax(t/T) ‖ softmax(s/T))`` (Hinton's scaling: the
    gradients keep their size as ``T`` changes)."""
    t = ops.cast(teacher_logits, "float32") / temperature
    s = ops.cast(student_logits, "float32") / temperature
    log_pt = ops.log_softmax(t, axis=-1)
    log_ps = ops.log_softmax(s, axis=-1)
    kl = ops.sum(ops.exp(log_pt) * (log_pt - log_ps), axis=-1)
    return (temperature ** 2) * ops.mean(kl)


class Distiller(keras.Model):
    """A student trained with a frozen teacher's soft targets (module docstring).

    Args:
        student: the model being trained (its outputs are the Distiller's outputs, so metrics and
            validation see the student).
        teacher: a trained model with the same number of classes and output size for the
            student's input; frozen.
        alpha: weight of the teacher term, in [0, 1]; ``1 − alpha`` weighs the labels' loss.
        temperature: softmax temperature of both sides of the teacher term (≥ 1 softens).
    """

    def __init__(self, student, teacher, alpha: float = 0.5, temperature: float = 1.0, **kwargs):
        super().__init__(name=kwargs.pop("name", f"{student.name}_distilled"), **kwargs)
        if not 0.0 <= float(alpha) <= 1.0:
            raise KsegError(f"distillation weight must be within 0..1 (the teacher's share of the loss), got {alpha}")
        if not float(temperature) > 0:
            raise KsegError(f"distillation temperature must be > 0, got {temperature}")
        s_shape, t_shape = tuple(student.output_shape), tuple(teacher.output_shape)
        if s_shape[1:] != t_shape[1:]:
            raise KsegError(f"the teacher's output {t_shape[1:]} does not match the student's {s_shape[1:]}: "
                            "give a teacher with the same classes (it is rebuilt at the student's input size)")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.built = True

    def call(self, x, training=False):
        return self.student(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if self.alpha == 0.0:
            return labels
        teacher = ops.stop_gradient(self.teacher(x, training=False))
        soft = soft_target_loss(teacher, y_pred, self.temperature)
        return (1.0 - self.alpha) * labels + self.alpha * soft
