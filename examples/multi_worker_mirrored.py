"""Two workers training under ``tf.distribute.MultiWorkerMirroredStrategy``, each checked by flowcheck.

An online Q-network is trained towards a target network's bootstrapped values; the target is
wrapped in ``tf.stop_gradient``, so the target network and the discount (a ``tf.Variable``) must
get no gradient, while every weight of the online network does. An entropy weight made for a
term this loss no longer has is never read: it is listed as unused. Each worker differentiates its own share of the loss (``strategy.run``, local results
summed), as Keras does under this strategy; the optimizer all-reduces the gradients across workers.

``python examples/multi_worker_mirrored.py`` starts two worker processes on 127.0.0.1 (a
``TF_CONFIG`` cluster on two free ports), waits for them (at most two minutes) and prints what
each found: one row per variable as you named it, and a real optimizer step on every worker,
after which every variable is restored. A single worker (``TF_CONFIG`` set by you, or none: a
one-worker strategy) also runs under ``flowcheck analyze examples/multi_worker_mirrored.py``.
"""

import json
import os
import socket
import subprocess
import sys

WORKERS = 2
TIMEOUT = 120.0  # seconds for every worker to start, rendezvous and finish


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch_workers() -> int:
    """Run this file as two workers of one cluster; print their reports; 0 when both succeed."""
    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(WORKERS)]}
    procs = []
    try:
        for index in range(WORKERS):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="2")
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)], env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        outputs = [proc.communicate(timeout=TIMEOUT)[0] for proc in procs]
    except subprocess.TimeoutExpired:
        print(f"the workers did not finish within {TIMEOUT:.0f} s", file=sys.stderr)
        return 1
    finally:
        for proc in procs:  # never leave a worker behind, whatever happened
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    for index, (proc, out) in enumerate(zip(procs, outputs)):
        lines = out.splitlines() if proc.returncode == 0 else out.splitlines()[-20:]
        print(f"--- worker {index} (exit {proc.returncode})", *(line for line in lines if _shown(line)), sep="\n")
    return max(proc.returncode for proc in procs)


def _shown(line: str) -> bool:
    # TensorFlow's start-up chatter from C++ logging, which TF_CPP_MIN_LOG_LEVEL does not silence.
    return not line.startswith(("WARNING: All log messages", "I0000", "E0000", "W0000"))


if __name__ == "__main__" and "TF_CONFIG" not in os.environ:
    sys.exit(launch_workers())

import tensorflow as tf  # noqa: E402 -- a worker (or an import): only now TensorFlow

import keras  # noqa: E402

strategy = tf.distribute.MultiWorkerMirroredStrategy()
task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {}).get("index", 0)
keras.utils.set_random_seed(0)  # the same initial weights on every worker



def q_network(name: str) -> keras.Model:
    return keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(16, activation="relu", name="hidden"), keras.layers.Dense(3, name="q")],
        name=name,
    )


with strategy.scope():
    online = q_network("online")
    target = q_network("target")
    hyper = {
        "discount": tf.Variable(0.9, name="discount"),
        "entropy_weight": tf.Variable(0.01, name="entropy_weight"),  # for a term this loss dropped
    }

rng = tf.random.stateless_normal
obs = rng((8, 6), seed=(task, 1))  # each worker its own shard of transitions
next_obs = rng((8, 6), seed=(task, 2))
rewards = rng((8,), seed=(task, 3))
actions = tf.constant([0, 1, 2, 0, 1, 2, 0, 1])


@tf.function
def worker_loss(obs, actions, rewards, next_obs):
    def replica_loss(obs, actions, rewards, next_obs):
        bootstrap = tf.reduce_max(target(next_obs, training=False), axis=-1)
        targets = tf.stop_gradient(rewards + hyper["discount"] * bootstrap)
        chosen = tf.gather(online(obs, training=True), actions, batch_dims=1)
        return tf.reduce_mean((chosen - targets) ** 2) / strategy.num_replicas_in_sync

    per_replica = strategy.run(replica_loss, args=(obs, actions, rewards, next_obs))
    return tf.add_n(strategy.experimental_local_results(per_replica))  # this worker's share


example_inputs = (obs, actions, rewards, next_obs)
flowcheck_optimizer = ("sgd", 0.1)

if __name__ == "__main__":
    import flowcheck

    report = flowcheck.analyze(worker_loss, *example_inputs)
    check = report.verify(optimizer="sgd", learning_rate=0.1)  # every worker steps: a collective
    moved = {c.name for c in check.variables if c.changed}
    print(f"worker {task}: {strategy.num_replicas_in_sync} replicas in sync; verification agrees: {check.agrees}")
    for result in report.variables:
        why = f" at {result.barriers[0].source}" if result.barriers else ""
        print(f"  {result.verdict.value:9} {result.name}{why}{' (one SGD step moved it)' if result.name in moved else ''}")
