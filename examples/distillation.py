"""Knowledge distillation from the dense model during masked retraining.

The pruned model (the student) learns from the labels and from the dense
model's softened outputs (Hinton et al. 2015): loss = (1 - alpha) x cross-entropy
+ alpha x T^2 x KL(softmax(teacher / T) || softmax(student / T)). It is built as
one functional model whose output is the student's logits followed by the
frozen teacher's, so that `model.fit`, `MaskedWrapper`, checkpoints and every
Keras backend work unchanged; the student is the same object, trained in place.

    >>> combined = with_teacher(student, dense)  # doctest: +SKIP
    >>> combined.compile(optimizer, loss=DistillationLoss(10),
    ...                  metrics=[student_accuracy(10)])  # doctest: +SKIP
    >>> combined.fit(dataset)  # doctest: +SKIP
"""

import keras
from keras import ops


def with_teacher(student, teacher):
    """A model of `student`'s input whose output is [student logits | teacher logits].

    The teacher's layers are frozen (`trainable = False`, on the model passed
    in: its BatchNorms then run in inference mode); the student's variables are
    the ones trained. Both take the same input and give logits. A Dropout inside
    the teacher would still be active in training (ResNets and VGG here have none).
    """
    if tuple(student.input_shape) != tuple(teacher.input_shape):
        raise ValueError(
            f"with_teacher: the student '{student.name}' takes {student.input_shape} "
            f"and the teacher '{teacher.name}' {teacher.input_shape}; distill from a "
            "teacher of the same input."
        )
    if student.output_shape[-1] != teacher.output_shape[-1]:
        raise ValueError(
            f"with_teacher: the student '{student.name}' has "
            f"{student.output_shape[-1]} outputs, the teacher '{teacher.name}' "
            f"{teacher.output_shape[-1]}; both must give the same classes' logits."
        )
    # Its own name: the student and the teacher are usually the same architecture.
    teacher = keras.Model(teacher.inputs, teacher.output, name="teacher")
    teacher.trainable = False
    inputs = keras.Input(student.input_shape[1:], name="images")
    outputs = keras.layers.Concatenate(name="student_teacher_logits")(
        [student(inputs), teacher(inputs)]
    )
    return keras.Model(inputs, outputs, name=f"{student.name}_distillation")


class DistillationLoss(keras.losses.Loss):
    """(1 - alpha) x cross-entropy + alpha x T^2 x KL on [student | teacher] logits.

    Args:
      classes: number of classes (the first `classes` logits are the student's).
      temperature: the softmax temperature T (Hinton et al.: 2-20; 4 is usual on
        CIFAR).
      alpha: the weight of the distillation term, in [0, 1].
    """

    def __init__(self, classes, temperature=4.0, alpha=0.9, name="distillation"):
        super().__init__(name=name)
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(
                f"DistillationLoss: temperature={temperature} must be > 0 and "
                f"alpha={alpha} in [0, 1]."
            )
        self.classes = classes
        self.temperature = temperature
        self.alpha = alpha

    def call(self, y_true, y_pred):
        student = y_pred[:, : self.classes]
        teacher = ops.stop_gradient(y_pred[:, self.classes :])
        t = self.temperature
        labels = keras.losses.sparse_categorical_crossentropy(
            y_true, student, from_logits=True
        )
        soft_teacher = ops.softmax(teacher / t, axis=-1)
        kl = ops.sum(
            soft_teacher
            * (
                ops.log_softmax(teacher / t, axis=-1)
                - ops.log_softmax(student / t, axis=-1)
            ),
            axis=-1,
        )
        return (1 - self.alpha) * labels + self.alpha * t * t * kl

    def get_config(self):
        return {
            "name": self.name,
            "classes": self.classes,
            "temperature": self.temperature,
            "alpha": self.alpha,
        }


def student_accuracy(classes):
    """A metric: the accuracy of the student's logits (the first `classes`)."""

    def accuracy(y_true, y_pred):
        return keras.metrics.sparse_categorical_accuracy(y_true, y_pred[:, :classes])

    return accuracy
