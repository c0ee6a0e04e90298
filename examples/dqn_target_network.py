"""Deep Q-learning with a target network (Mnih et al., 2015).

The TD target is computed with a slowly-updated copy of the Q-network and wrapped in
``tf.stop_gradient``: only the online network may learn from the Huber loss. flowcheck shows the
target network's weights as blocked, at the ``stop_gradient`` line, and the online network's as
receiving::

    flowcheck analyze examples/dqn_target_network.py --expect-receives 'online/*' --expect-blocked 'target/*'

Run it as a script (``python examples/dqn_target_network.py``) to train on random transitions.
"""

import keras
import numpy as np
import tensorflow as tf

NUM_ACTIONS = 4
STATE_DIM = 8
GAMMA = 0.99


def build_q_network(name):
    return keras.Sequential(
        [
            keras.Input((STATE_DIM,)),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(NUM_ACTIONS, name="q_values"),
        ],
        name=name,
    )


online = build_q_network("online")
target = build_q_network("target")
target.set_weights(online.get_weights())
huber = keras.losses.Huber()


@tf.function
def dqn_loss(states, actions, rewards, next_states, dones):
    # Bootstrapped TD target from the frozen copy: no gradient may flow into it.
    next_q = tf.reduce_max(target(next_states), axis=1)
    td_target = tf.stop_gradient(rewards + GAMMA * (1.0 - dones) * next_q)
    q = tf.gather(online(states), actions, batch_dims=1)
    return huber(td_target, q)


def replay_batch(rng, batch_size=32):
    """A batch of random transitions, as a replay buffer would sample them."""
    return (
        tf.constant(rng.standard_normal((batch_size, STATE_DIM)), tf.float32),
        tf.constant(rng.integers(0, NUM_ACTIONS, batch_size), tf.int32),
        tf.constant(rng.standard_normal(batch_size), tf.float32),
        tf.constant(rng.standard_normal((batch_size, STATE_DIM)), tf.float32),
        tf.constant(rng.integers(0, 2, batch_size), tf.float32),
    )


example_inputs = replay_batch(np.random.default_rng(0))

if __name__ == "__main__":
    rng = np.random.default_rng(1)
    optimizer = keras.optimizers.Adam(1e-3)
    for step in range(20):
        with tf.GradientTape() as tape:
            loss = dqn_loss(*replay_batch(rng))
        grads = tape.gradient(loss, online.trainable_variables)
        optimizer.apply_gradients(zip(grads, online.trainable_variables))
        if step % 10 == 9:
            target.set_weights(online.get_weights())
            print(f"step {step + 1}: loss {float(loss):.4f}, target network synced")
