"""A custom training step under ``tf.distribute.MirroredStrategy``, with a frozen teacher.

A student network is trained to match a teacher; the teacher's output is wrapped in
``tf.stop_gradient`` (as in distillation or a BYOL/DQN target network), so the teacher's weights
must get no gradient. Each replica computes its share of the loss in ``strategy.run``, and the
step sums the shares. flowcheck reports one verdict per variable you created (not one per replica
copy) and verifies it with a real optimizer step on the mirrored variables.

Two logical CPU devices stand in for two GPUs. Run it with ``python examples/mirrored_strategy.py``
or ``flowcheck analyze examples/mirrored_strategy.py``.
"""

import numpy as np
import tensorflow as tf

try:
    # Two replicas on one CPU; possible only before TensorFlow has run an op in this process.
    _cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(_cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:
    pass  # already initialized (e.g. imported by a running program): use the devices there are

import keras  # noqa: E402 -- after the device configuration

strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
GLOBAL_BATCH = 8

with strategy.scope():
    keras.utils.set_random_seed(0)
    student = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="hidden"), keras.layers.Dense(4, name="out")],
        name="student",
    )
    teacher = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(32, activation="relu", name="hidden"), keras.layers.Dense(4, name="out")],
        name="teacher",
    )
    temperature = tf.Variable(2.0, name="temperature")

rng = np.random.default_rng(0)
x = tf.constant(rng.random((GLOBAL_BATCH, 16)), dtype=tf.float32)


@tf.function
def distill_loss(x):
    def replica_loss(x):
        targets = tf.nn.softmax(tf.stop_gradient(teacher(x, training=False)) / temperature)
        log_probs = tf.nn.log_softmax(student(x, training=True) / temperature)
        per_example = -tf.reduce_sum(targets * log_probs, axis=-1)
        return tf.reduce_sum(per_example) / GLOBAL_BATCH

    per_replica = strategy.run(replica_loss, args=(x,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


example_inputs = (x,)
flowcheck_optimizer = ("sgd", 0.1)

if __name__ == "__main__":
    import flowcheck

    print(f"{strategy.num_replicas_in_sync} replicas: {', '.join(strategy.extended.worker_devices)}")
    report = flowcheck.analyze(distill_loss, x)
    for result in report.variables:
        print(f"{result.name:22} {result.verdict}", *(str(b) for b in result.barriers[:1]))
    check = report.verify(optimizer="sgd", learning_rate=0.1)
    print("verification agrees:", check.agrees)
    for variable_check in check.variables:
        print(f"  {variable_check.name:22} gradient {variable_check.gradient}, changed {variable_check.changed}")
