"""Gradient application with dynamic loss scaling that also works under MirroredStrategy.

Keras 3.15's LossScaleOptimizer.apply fails with several replicas: it runs the inner optimizer
in a cond inside merge_call and the gradients arrive as None ("No gradients provided for any
variable", keras-team/keras#18666). With one replica it works, and it is used as is.

With several replicas, `apply_gradients` does the loss scaling itself, on the
LossScaleOptimizer's own variables (so checkpoints are the same either way):
  - gradients of loss * scale, divided by scale;
  - one "all finite" flag, all-reduced so every replica takes the same decision;
  - non-finite steps apply zero gradients to the inner optimizer (a cond around an optimizer
    update cannot hold the merge_call the update needs), so a skipped step still advances the
    Adam moments and iteration count, and the weights move by the decayed momentum only;
  - the scale is halved on a non-finite step and doubled after `dynamic_growth_steps` finite
    ones, as LossScaleOptimizer does, with selects instead of conds.
"""

import keras
import tensorflow as tf


def apply_gradients(optimizer, tape, scaled_loss, variables):
    """Applies the gradients of a loss w.r.t. `variables` (call in replica context).

    Args:
      optimizer: a Keras optimizer, or a keras.optimizers.LossScaleOptimizer.
      tape: the GradientTape that recorded `scaled_loss`.
      scaled_loss: `optimizer.scale_loss(loss)`, computed under `tape` (the identity for a plain
        optimizer), where loss is this replica's share of the global mean loss.
      variables: the variables to update.
    """
    replicas = tf.distribute.get_replica_context().num_replicas_in_sync
    if not isinstance(optimizer, keras.optimizers.LossScaleOptimizer) or replicas == 1:
        # LossScaleOptimizer.apply unscales.
        optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        return
    scale = tf.convert_to_tensor(optimizer.dynamic_scale)
    grads = [g / scale for g in tape.gradient(scaled_loss, variables)]
    non_finite = tf.add_n(
        [tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in grads]
    )
    context = tf.distribute.get_replica_context()
    finite = tf.equal(context.all_reduce(tf.distribute.ReduceOp.SUM, non_finite), 0.0)
    grads = [tf.where(finite, g, tf.zeros_like(g)) for g in grads]
    optimizer.inner_optimizer.apply(grads, variables)
    context.merge_call(_update_scale, args=(optimizer, finite))


def _update_scale(strategy, optimizer, finite):
    # Cross-replica context: every replica computed the same flag; take the first.
    finite = strategy.experimental_local_results(finite)[0]
    counter = tf.convert_to_tensor(optimizer.step_counter)
    scale = tf.convert_to_tensor(optimizer.dynamic_scale)
    grow = tf.logical_and(finite, tf.equal(counter, optimizer.dynamic_growth_steps - 1))
    next_counter = tf.where(finite & ~grow, counter + 1, tf.zeros_like(counter))
    next_scale = tf.where(grow, scale * 2.0, tf.where(finite, scale, scale * 0.5))
    optimizer.step_counter.assign(next_counter)
    optimizer.dynamic_scale.assign(next_scale)
