r"""Cost of one content-loss gradient (what the GAN step pays) per perceptual network.

Runs side by side in one process: VGG54 (default), the ResNet152V2 cut at conv2_block3_out (the
option), and the uncut ResNet152V2 (the cost of using the whole network, as a baseline).
Random weights: the cost does not depend on the values.

  python -m benchmarks.perceptual --batch_size=16 --hr_patch_size=96 --steps=3
"""

import time

import keras
import tensorflow as tf
from absl import app, flags

from trainer import perceptual

_BATCH_SIZE = flags.DEFINE_integer("batch_size", 16, "HR patches per step.")
_HR_PATCH_SIZE = flags.DEFINE_integer("hr_patch_size", 96, "HR patch side.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per network (after one warm-up).")


def _uncut_resnet152v2():
    backbone = keras.applications.ResNet152V2(
        include_top=False, weights=None, input_shape=(None, None, 3)
    )
    inputs = keras.Input((None, None, 3))
    features = backbone(perceptual.ImageNetPreprocess("resnet152v2")(inputs))
    model = keras.Model(inputs, features)
    model.trainable = False
    return model


def _seconds_per_step(model, hr, sr):
    @tf.function
    def step(sr):
        with tf.GradientTape() as tape:
            tape.watch(sr)
            loss = tf.reduce_mean(perceptual.content_loss(model, hr, sr))
        return loss, tape.gradient(loss, sr)

    step(sr)  # trace + warm-up
    start = time.perf_counter()
    for _ in range(_STEPS.value):
        loss, grad = step(sr)
    grad.numpy()
    return (time.perf_counter() - start) / _STEPS.value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    shape = (_BATCH_SIZE.value, _HR_PATCH_SIZE.value, _HR_PATCH_SIZE.value, 3)
    hr = tf.random.uniform(shape, -1.0, 1.0, seed=1)
    sr = tf.random.uniform(shape, -1.0, 1.0, seed=2)
    candidates = {
        "vgg54 (VGG19 block5_conv4)": lambda: perceptual.build_content_model("vgg54", "none"),
        "resnet152v2 cut (conv2_block3_out)": lambda: perceptual.build_content_model(
            "resnet152v2", "none"
        ),
        "resnet152v2 uncut (baseline)": _uncut_resnet152v2,
    }
    print(f"content loss + gradient, batch {shape[0]}, {shape[1]}x{shape[2]} HR patches")
    for name, build in candidates.items():
        seconds = _seconds_per_step(build(), hr, sr)
        print(f"{name:<38} {seconds:7.3f} s/step  {shape[0] / seconds:7.1f} patches/s")


if __name__ == "__main__":
    app.run(main)
