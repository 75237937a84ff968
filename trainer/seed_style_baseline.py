"""The baseline of trainer.bench_train: the same models driven the way the seed notebook did.

One Python-level Keras call per sub-step: `predict` for the generator and the content features,
`train_on_batch` for a compiled discriminator (real and fake batches separately) and for a
combined generator -> (frozen discriminator, content network) model. Used only for timing.
"""

import keras
import numpy as np


class SeedStyleTrainer:
    """Per-step Keras calls on compiled models (no tf.function loop of our own)."""

    def __init__(self, generator, discriminator=None, content_model=None, loss_weights=(1e-3, 1.0)):
        self.generator = generator
        self.discriminator = discriminator
        self.content_model = content_model
        if discriminator is None:
            generator.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
            return
        discriminator.compile(optimizer=keras.optimizers.Adam(1e-4),
                              loss=keras.losses.BinaryCrossentropy(from_logits=True))
        lr = keras.Input(shape=generator.input_shape[1:])
        sr = generator(lr)
        self.combined = keras.Model(lr, [discriminator(sr), content_model(sr)])
        self.combined.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=[keras.losses.BinaryCrossentropy(from_logits=True), "mse"],
            loss_weights=list(loss_weights))

    def train_step(self, lr, hr):
        """One step on numpy batches; returns the losses as floats."""
        if self.discriminator is None:
            return {"pixel_loss": float(self.generator.train_on_batch(lr, hr))}
        batch = len(lr)
        real, fake = np.ones((batch, 1), np.float32), np.zeros((batch, 1), np.float32)
        sr = self.generator.predict(lr, verbose=0)
        self.discriminator.trainable = True
        d_real = self.discriminator.train_on_batch(hr, real)
        d_fake = self.discriminator.train_on_batch(sr, fake)
        hr_features = self.content_model.predict(hr, verbose=0)
        # The seed's pattern: the discriminator is frozen inside the combined model. Keras 3
        # reads `trainable` when a train function is first traced, so this freezes it there.
        self.discriminator.trainable = False
        g_losses = self.combined.train_on_batch(lr, [real, hr_features])
        return {"d_loss": float(d_real) + float(d_fake), "g_loss": float(np.ravel(g_losses)[0])}
