"""tensorflow.org's guides and tutorials as users copy them, under ``flowcheck run``.

The scripts are the guides' own code ("Introduction to gradients and automatic differentiation",
"Custom training with tf.distribute.Strategy", the Actor-Critic and word2vec tutorials), shrunk to
tiny sizes. The truth is each script's own tape, run alone in the test (its answers saved by the
script); ``--continue`` is held to the script run alone.
"""

from __future__ import annotations

import json
import runpy
import textwrap
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from flowcheck.cli.main import main
from truth import line_of


def script(tmp_path: Path, text: str, name: str = "guide.py", **values: str) -> Path:
    path = tmp_path / name
    body = textwrap.dedent(text)
    for key, value in values.items():
        body = body.replace(key, value)
    path.write_text(body)
    return path


def alone(path: Path) -> dict[str, Any]:
    """The script run alone, as ``python guide.py`` runs it: its globals."""
    keras.utils.clear_session()
    return runpy.run_path(str(path), run_name="__main__")


def run_json(capsys: Any, *argv: str | Path) -> tuple[int, dict[str, Any]]:
    keras.utils.clear_session()
    code = main(["run", *map(str, argv), "--json"])
    captured = capsys.readouterr()
    assert captured.out, captured.err
    return code, json.loads(captured.out)


def eager_site(document: dict[str, Any]) -> dict[str, Any]:
    (step,) = document["steps"]
    site: dict[str, Any] = step["site"]
    return site


# "Cases where gradient returns None": a variable, a non-trainable variable, a variable plus a number
# (a tensor) and a constant; then the same guide's dict of sources with watch_accessed_variables=False.
WATCHED = """\
    import tensorflow as tf

    x0 = tf.Variable(3.0, name='x0')
    x1 = tf.Variable(3.0, name='x1', trainable=False)
    x2 = tf.Variable(2.0, name='x2') + 1.0
    x3 = tf.constant(3.0, name='x3')

    with tf.GradientTape() as tape:
      y = (x0**2) + (x1**2) + (x2**2)

    grad = tape.gradient(y, [x0, x1, x2, x3])  # the call
    TRUTH = [g is None for g in grad]
    """

WATCH_DICT = """\
    import tensorflow as tf

    x0 = tf.Variable(0.0)
    x1 = tf.Variable(10.0)

    with tf.GradientTape(watch_accessed_variables=False) as tape:
      tape.watch(x1)
      y0 = tf.math.sin(x0)
      y1 = tf.nn.softplus(x1)
      ys = tf.reduce_sum(y0 + y1)

    grad = tape.gradient(ys, {'x1': x1, 'x0': x0})
    TRUTH = [grad['x0'] is None, grad['x1'] is None]
    """


def test_unwatched_tensors_and_a_frozen_variable_are_each_told_why_they_get_none(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, WATCHED)
    truth = alone(path)["TRUTH"]
    code, document = run_json(capsys, path)
    site = eager_site(document)
    assert [s["tensorflow_none"] for s in site["sources"]] == [s["verdict"] != "receives" for s in site["sources"]] == truth
    assert [s["name"] for s in site["sources"]] == ["x0", "x1", "x2", "x3"]
    assert site["source"]["line"] == line_of(path, "# the call")
    notes = " | ".join(site["notes"])
    # x2 (a variable plus a number) and x3 are tensors: no graph would name an op for them, nor for x1
    assert "not watched: x1: trainable=False" in notes
    assert "not watched: x2, x3: tensors, not variables, and no tape.watch call names them" in notes
    assert "flowcheck cannot name the op" not in notes
    assert code == 1 and truth == [False, True, True, True]


def test_a_dict_of_sources_is_named_by_the_values_the_call_writes(tmp_path: Path, capsys: Any) -> None:
    # Both variables are TensorFlow's "Variable": the blocked one was shown as "Variable (2)".
    path = script(tmp_path, WATCH_DICT)
    truth = alone(path)["TRUTH"]
    code, document = run_json(capsys, path)
    site = eager_site(document)
    by_name = {s["name"]: s for s in site["sources"]}
    assert [by_name["x0"]["tensorflow_none"], by_name["x1"]["tensorflow_none"]] == truth == [True, False]
    assert by_name["x0"]["verdict"] == "blocked" and by_name["x1"]["verdict"] == "receives"
    assert "watched: x1" in site["watch"]
    assert any(n.startswith("not watched: x0: the tape has watch_accessed_variables=False") for n in site["notes"])
    assert code == 1


# The guide's integer source, its assign_add inside the tape, and its Python `if` on a watched tensor.
INTEGER = """\
    import tensorflow as tf
    x = tf.constant(10)

    with tf.GradientTape() as g:
      g.watch(x)
      y = x * x

    TRUTH = [g.gradient(y, x) is None]
    """

ASSIGN = """\
    import tensorflow as tf
    x0 = tf.Variable(3.0)
    x1 = tf.Variable(0.0)

    with tf.GradientTape() as tape:
      x1.assign_add(x0)  # the assign
      y = x1**2

    TRUTH = [tape.gradient(y, x0) is None]
    """

CONDITION = """\
    import tensorflow as tf
    x = tf.constant(1.0)

    v0 = tf.Variable(2.0)
    v1 = tf.Variable(2.0)

    with tf.GradientTape(persistent=True) as tape:
      tape.watch(x)
      if x > 0.0:  # the condition
        result = v0
      else:
        result = v1**2

    TRUTH = [g is None for g in tape.gradient(result, [v0, v1])]
    """


@pytest.mark.parametrize(("text", "told"), [
    (INTEGER, "x (int32): a value of a non-float dtype, which carries no gradient"),
    (ASSIGN, "`.assign_add()` at line {assign} puts a value the tape records into a variable inside the tape's block"),
    (CONDITION, "the Python condition at line {condition} runs only the branch taken: v1 is not read in the tape's block"),
], ids=["integer source", "assign_add of a variable", "python if on a watched tensor"])
def test_the_guides_none_cases_are_told_at_their_line(tmp_path: Path, capsys: Any, text: str, told: str) -> None:
    path = script(tmp_path, text)
    truth = alone(path)["TRUTH"]
    code, document = run_json(capsys, path)
    site = eager_site(document)
    assert [s["tensorflow_none"] for s in site["sources"]] == [s["verdict"] != "receives" for s in site["sources"]] == truth
    lines = {"assign": "# the assign", "condition": "# the condition"}
    expected = told.format(**{k: line_of(path, m) for k, m in lines.items() if "{" + k + "}" in told})
    assert any(n.startswith(expected) for n in site["notes"]), site["notes"]
    assert code == 1 and any(truth)


NO_GRADIENT = """\
    import tensorflow as tf
    image = tf.Variable([[[0.5, 0.0, 0.0]]])
    delta = tf.Variable(0.1)

    with tf.GradientTape() as tape:
      new_image = tf.image.adjust_contrast(image, delta)

    try:
      print(tape.gradient(new_image, [image, delta]))
      assert False   # This should not happen.
    except LookupError as e:
      print(f'{type(e).__name__}: {e}')
    """


def test_a_gradient_call_that_raises_says_the_script_was_ended_there(tmp_path: Path, capsys: Any) -> None:
    # It said "ended at its next call of a step analyzed", of a script with one gradient call.
    path = script(tmp_path, NO_GRADIENT)
    keras.utils.clear_session()
    code = main(["run", str(path)])
    out = capsys.readouterr().out
    assert "LookupError: gradient registry has no entry for: AdjustContrastv2" in out
    assert "the script was ended at the gradient call that raised" in out
    assert "ended at its next call of a step analyzed" not in out
    assert code == 1


# "Custom training with tf.distribute.Strategy": a whole epoch over the distributed dataset in one
# tf.function. Its OptionalGetValue (image, label) batch made a note "could not ask the gradient"; a
# run of it ahead of the call (--continue) took a shuffle's seeds, the order of the script's next epoch.
DISTRIBUTED_EPOCH = """\
    import numpy as np
    import tensorflow as tf
    import keras

    keras.utils.set_random_seed(0)
    images = np.random.rand(16, 6, 6, 1).astype('float32')
    labels = np.random.randint(0, 10, 16)
    strategy = tf.distribute.MirroredStrategy()
    train_dataset = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(16).batch(8)
    train_dist_dataset = strategy.experimental_distribute_dataset(train_dataset)
    with strategy.scope():
      model = tf.keras.Sequential([tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)])
      loss_object = tf.keras.losses.SparseCategoricalCrossentropy(
          from_logits=True, reduction=tf.keras.losses.Reduction.NONE)
      optimizer = tf.keras.optimizers.Adam(learning_rate=0.001)

    def train_step(inputs):
      images, labels = inputs
      with tf.GradientTape() as tape:
        predictions = model(images, training=True)
        loss = tf.nn.compute_average_loss(loss_object(labels, predictions))
      gradients = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(gradients, model.trainable_variables))
      return loss

    @tf.function
    def distributed_train_epoch(dataset):
      total_loss = 0.0
      num_batches = 0
      for x in dataset:
        per_replica_losses = strategy.run(train_step, args=(x,))
        total_loss += strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_losses, axis=None)
        num_batches += 1
      return total_loss / tf.cast(num_batches, dtype=tf.float32)

    losses = [float(distributed_train_epoch(train_dist_dataset)) for epoch in range(2)]
    np.save(OUT, np.array(losses + [float(v.numpy().sum()) for v in model.weights]))
    """


@pytest.mark.slow  # two runs of a distributed script, about 6 s
def test_a_distributed_epoch_in_one_function_is_judged_without_noise_and_continues_exactly(
    tmp_path: Path, capsys: Any,
) -> None:
    first, second = tmp_path / "alone.npy", tmp_path / "watched.npy"
    alone(script(tmp_path, DISTRIBUTED_EPOCH, "a.py", OUT=repr(str(first))))
    code, document = run_json(capsys, script(tmp_path, DISTRIBUTED_EPOCH, "b.py", OUT=repr(str(second))), "--continue")
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] for s in site["sources"]] == ["receives"] * 2  # the tape's: every weight (checked below)
    assert not [n for n in step["report"]["notes"] if "could not ask the gradient" in n]
    assert any("shuffle draws new seeds" in n for n in step["report"]["notes"])
    assert code == 0
    np.testing.assert_array_equal(np.load(first), np.load(second))


# The Actor-Critic tutorial: its environment steps through tf.numpy_function inside the traced episode.
ACTOR_CRITIC = """\
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras import layers

    class FakeCartPole:
      def __init__(self):
        self.rng, self.t = np.random.default_rng(0), 0
      def reset(self):
        self.t = 0
        return self.rng.normal(size=4).astype(np.float32), {}
      def step(self, action):
        self.t += 1
        return self.rng.normal(size=4), 1.0, self.t >= 4, False, {}

    env = FakeCartPole()
    tf.keras.utils.set_random_seed(42)

    class ActorCritic(tf.keras.Model):
      def __init__(self, num_actions, num_hidden_units):
        super().__init__()
        self.common = layers.Dense(num_hidden_units, activation="relu")
        self.actor = layers.Dense(num_actions)
        self.critic = layers.Dense(1)
      def call(self, inputs):
        x = self.common(inputs)
        return self.actor(x), self.critic(x)

    model = ActorCritic(2, 8)

    @tf.numpy_function(Tout=[tf.float32, tf.int32, tf.int32])
    def env_step(action):
      state, reward, done, truncated, info = env.step(action)
      return (state.astype(np.float32), np.array(reward, np.int32), np.array(done, np.int32))

    def run_episode(initial_state, model, max_steps):
      action_probs = tf.TensorArray(dtype=tf.float32, size=0, dynamic_size=True)
      values = tf.TensorArray(dtype=tf.float32, size=0, dynamic_size=True)
      rewards = tf.TensorArray(dtype=tf.int32, size=0, dynamic_size=True)
      initial_state_shape = initial_state.shape
      state = initial_state
      for t in tf.range(max_steps):
        state = tf.expand_dims(state, 0)
        action_logits_t, value = model(state)
        action = tf.random.categorical(action_logits_t, 1)[0, 0]
        action_probs_t = tf.nn.softmax(action_logits_t)
        values = values.write(t, tf.squeeze(value))
        action_probs = action_probs.write(t, action_probs_t[0, action])
        state, reward, done = env_step(action)
        state.set_shape(initial_state_shape)
        rewards = rewards.write(t, reward)
        if tf.cast(done, tf.bool):
          break
      return action_probs.stack(), values.stack(), rewards.stack()

    huber_loss = tf.keras.losses.Huber(reduction=tf.keras.losses.Reduction.SUM)
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.01)

    @tf.function
    def train_step(initial_state, model, optimizer, gamma, max_steps_per_episode):
      with tf.GradientTape() as tape:
        action_probs, values, rewards = run_episode(initial_state, model, max_steps_per_episode)
        returns = tf.reshape(tf.cast(rewards, tf.float32), [-1]) * gamma
        advantage = returns - values
        loss = -tf.math.reduce_sum(tf.math.log(action_probs) * advantage) + huber_loss(values, returns)
      grads = tape.gradient(loss, model.trainable_variables)
      optimizer.apply_gradients(zip(grads, model.trainable_variables))
      return tf.math.reduce_sum(rewards)

    rewards = []
    for i in range(2):
      initial_state, info = env.reset()
      rewards.append(int(train_step(tf.constant(initial_state), model, optimizer, 0.99, 50)))
    np.save(OUT, np.array(rewards + [env.rng.normal()] + [float(v.numpy().sum()) for v in model.weights]))
    """


@pytest.mark.slow  # two runs of a script with a traced episode loop, about 5 s
def test_a_step_calling_its_environment_through_numpy_function_is_not_run_ahead(tmp_path: Path, capsys: Any) -> None:
    # Under --continue the step's trace ran once ahead of the script's call: the environment stepped
    # through a whole episode more, and the script's first episode ended at once.
    first, second = tmp_path / "alone.npy", tmp_path / "watched.npy"
    namespace = alone(script(tmp_path, ACTOR_CRITIC, "a.py", OUT=repr(str(first))))
    code, document = run_json(capsys, script(tmp_path, ACTOR_CRITIC, "b.py", OUT=repr(str(second))), "--continue")
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    model = namespace["model"]
    assert [s["verdict"] for s in site["sources"]] == ["receives"] * len(model.trainable_variables)
    assert any(n.startswith("not verified: the step calls Python through tf.numpy_function or tf.py_function (env_step)")
               for n in step["report"]["notes"])
    assert code == 0
    np.testing.assert_array_equal(np.load(first), np.load(second))


# The word2vec tutorial: a subclassed model that fit builds at its first batch.
WORD2VEC = """\
    import numpy as np
    import tensorflow as tf
    from tensorflow.keras import layers

    targets = np.random.randint(1, 20, (16,))
    contexts = np.random.randint(1, 20, (16, 3))
    labels = np.zeros((16, 3), dtype='float32'); labels[:, 0] = 1
    dataset = tf.data.Dataset.from_tensor_slices(((targets, contexts), labels)).batch(8, drop_remainder=True)

    class Word2Vec(tf.keras.Model):
      def __init__(self, vocab_size, embedding_dim):
        super(Word2Vec, self).__init__()
        self.target_embedding = layers.Embedding(vocab_size, embedding_dim, name="w2v_embedding")
        self.context_embedding = layers.Embedding(vocab_size, embedding_dim)

      def call(self, pair):
        target, context = pair
        if len(target.shape) == 2:
          target = tf.squeeze(target, axis=1)
        word_emb = self.target_embedding(target)
        context_emb = self.context_embedding(context)
        return tf.einsum('be,bce->bc', word_emb, context_emb)

    word2vec = Word2Vec(20, 4)
    word2vec.compile(optimizer='adam', loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))
    word2vec.fit(dataset, epochs=2, verbose=0)
    """


def test_weights_a_subclassed_model_builds_in_its_first_fit_batch_are_not_made_trainable_since(
    tmp_path: Path, capsys: Any,
) -> None:
    # The first batch builds both embeddings: at fit's next call they were "2 weights made trainable
    # since" that the kept step "does not train", a failure of a script training both.
    path = script(tmp_path, WORD2VEC)
    model = alone(path)["word2vec"]
    x = (np.array([1, 2]), np.array([[1, 2, 3], [4, 5, 6]]))
    import tensorflow as tf
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x))
    truth = [g is None for g in tape.gradient(loss, model.trainable_variables)]
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth == [False, False]
    assert document["untrained"] == []
    assert code == 0


# The guide's assign_add inside the tape, in a tf.function step: the AssignAddVariableOp the trace made
# under flowcheck run's own assign hook had no line (the hook's frame hid the user's).
TRACED_ASSIGN = """\
    import tensorflow as tf
    x0 = tf.Variable(3.0)
    x1 = tf.Variable(0.0)

    @tf.function
    def assign_case():
      with tf.GradientTape() as tape:
        x1.assign_add(x0)   # the assign
        y = x1**2
      return tape.gradient(y, [x0, x1])

    TRUTH = [g is None for g in assign_case()]
    """


def test_an_assign_in_a_traced_step_is_named_at_its_line_under_run(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, TRACED_ASSIGN)
    truth = alone(path)["TRUTH"]
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == [s["tensorflow_none"] for s in site["sources"]] == truth
    (x0, _) = site["sources"]
    (barrier,) = x0["barriers"]
    assert barrier["op_type"] == "AssignAddVariableOp" and barrier["in_user_code"]
    assert barrier["source"]["line"] == line_of(path, "# the assign")
    assert code == 1 and truth == [True, False]


# "Basic training loops": its Keras model holds tf.Variables, which Keras 3 does not track.
KERAS_TF_VARIABLES = """\
    import tensorflow as tf

    x = tf.linspace(-2.0, 2.0, 8)
    y = x * 3.0 + 2.0

    class MyModelKeras(tf.keras.Model):
      def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = tf.Variable(5.0)
        self.b = tf.Variable(0.0)

      def call(self, x):
        return self.w * x + self.b

    keras_model = MyModelKeras()
    keras_model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=0.1), loss=tf.keras.losses.MeanSquaredError())
    keras_model.fit(x, y, epochs=2, batch_size=1000, verbose=0)  # the fit
    """


def test_a_keras_model_holding_tf_variables_is_told_keras_does_not_track_them(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, KERAS_TF_VARIABLES)
    model = alone(path)["keras_model"]
    assert model.trainable_weights == []  # Keras 3's answer: nothing for fit to differentiate
    keras.utils.clear_session()
    code = main(["run", str(path)])
    err = capsys.readouterr().err
    assert (f".fit at {path}:{line_of(path, '# the fit')} trains nothing: the model has no weights: "
            "Keras 3 does not track the tf.Variable w, b it holds (create them with self.add_weight)") in err
    assert code == 2


def test_an_optional_of_images_and_integer_labels_is_asked_as_a_tape_asks_it() -> None:
    # A distributed dataset's batches come out of OptionalGetValue: its gradient function, given None for
    # the integer labels' gradient, raised, and every report said "could not ask the gradient of ...".
    import tensorflow as tf

    import flowcheck

    keras.utils.clear_session()
    w = tf.Variable(tf.ones((3,)), name="w")
    dataset = tf.data.Dataset.from_tensor_slices((tf.ones((4, 3)), tf.range(4))).batch(2)

    @tf.function
    def step(iterator: Any) -> Any:
        images, labels = iterator.get_next_as_optional().get_value()
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(w * images) + tf.cast(tf.reduce_sum(labels), tf.float32)
        return tape.gradient(loss, w)

    report = flowcheck.analyze(step, iter(dataset))
    (site,) = report.gradient_sites
    truth = [step(iter(dataset)) is not None]  # the site's own tape, traced
    assert [s.receives for s in site.sources] == truth == [True]
    assert not [n for n in report.notes if "could not ask the gradient" in n]


PY_FUNCTION_STEP = """\
    import numpy as np
    import tensorflow as tf
    w = tf.Variable(1.0)
    calls = []
    def double(t):
      calls.append(1)
      return t * 2
    opt = tf.keras.optimizers.SGD(0.1)

    @tf.function
    def step(x):
      with tf.GradientTape() as tape:
        y = w * tf.py_function(double, [x], tf.float32)
      g = tape.gradient(y, w)
      opt.apply_gradients([(g, w)])
      return g is None

    TRUTH = [bool(step(tf.constant(3.0))) for _ in range(2)]
    np.save(OUT, np.array([len(calls), w.numpy()]))
    """


def test_a_py_function_in_a_step_runs_as_often_as_the_script_alone_makes_it_run(tmp_path: Path, capsys: Any) -> None:
    # Under --continue the step's trace ran once ahead of the script's call: its Python ran once more.
    first, second = tmp_path / "alone.npy", tmp_path / "watched.npy"
    truth = alone(script(tmp_path, PY_FUNCTION_STEP, "a.py", OUT=repr(str(first))))["TRUTH"]
    code, document = run_json(capsys, script(tmp_path, PY_FUNCTION_STEP, "b.py", OUT=repr(str(second))), "--continue")
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == truth[:1] == [False]
    assert any(n.startswith("not verified: the step calls Python through tf.numpy_function or tf.py_function (double)")
               for n in step["report"]["notes"])
    assert code == 0
    np.testing.assert_array_equal(np.load(first), np.load(second))


# "Advanced automatic differentiation": tape.reset() inside a traced step throws out what was recorded.
TRACED_RESET = """\
    import tensorflow as tf
    x = tf.Variable(2.0)
    y = tf.Variable(3.0)

    @tf.function
    def reset_case(reset):
      with tf.GradientTape() as t:
        y_sq = y * y   # recorded, then thrown out
        if reset:
          t.reset()
        z = x * x + y_sq
      return t.gradient(z, {'x': x, 'y': y})

    TRUTH = [g is None for g in tf.nest.flatten(reset_case(True))]
    """


def test_a_reset_tape_in_a_traced_step_names_the_line_it_threw_out(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, TRACED_RESET)
    truth = alone(path)["TRUTH"]
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    (site,) = step["report"]["gradient_sites"]
    assert [s["name"] for s in site["sources"]] == ["x", "y"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == [s["tensorflow_none"] for s in site["sources"]] == truth
    (barrier,) = site["sources"][1]["barriers"]
    assert barrier["source"]["line"] == line_of(path, "# recorded, then thrown out")
    assert "before a tape.reset()" in barrier["detail"]
    assert code == 1 and truth == [False, True]


# Neural style transfer with the image left a tensor (tf.Variable forgotten): Keras raises at
# apply_gradients, building its slots for a tensor. flowcheck's trace skipped the update and said
# "raises ValueError: No gradients provided", and its trace failed one line later than the script.
STYLE_TENSOR_IMAGE = """\
    import tensorflow as tf
    image = tf.random.uniform((1, 8, 8, 3))  # tf.Variable forgotten
    opt = tf.keras.optimizers.Adam(learning_rate=0.02)
    frozen = tf.Variable(0.5, trainable=False)  # the frozen extractor's weights

    def loss_of(image):
      return tf.reduce_mean(tf.square(image - frozen))

    @tf.function
    def gradient_only(image):
      with tf.GradientTape() as tape:
        loss = loss_of(image)
      return tape.gradient(loss, image)

    @tf.function()
    def train_step(image):
      with tf.GradientTape() as tape:
        loss = loss_of(image)
      grad = tape.gradient(loss, image)
      opt.apply_gradients([(grad, image)])  # the apply
      image.assign(tf.clip_by_value(image, 0.0, 1.0))

    TRUTH = [gradient_only(image) is None]
    train_step(image)
    """


def test_apply_gradients_given_a_tensor_fails_in_the_trace_as_in_the_script(tmp_path: Path, capsys: Any) -> None:
    path = script(tmp_path, STYLE_TENSOR_IMAGE)
    truth = alone(script(tmp_path, STYLE_TENSOR_IMAGE.replace("    train_step(image)\n", ""), "truth.py"))["TRUTH"]
    code, document = run_json(capsys, path)
    (step,) = [s for s in document["steps"] if s["name"] == "train_step"]
    (site,) = step["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == [s["tensorflow_none"] for s in site["sources"]] == truth
    line = line_of(path, "# the apply")
    assert step["raised"].startswith(f"AttributeError at {path}:{line}")
    assert not [n for n in step["report"]["notes"] if "No gradients provided" in n]
    assert [n for n in step["report"]["notes"] if n.startswith(f"the trace of train_step raised AttributeError at {path}:{line}")]
    (only,) = [s for s in document["steps"] if s["name"] == "gradient_only"]
    assert only["error"] is None
    (site,) = only["report"]["gradient_sites"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == [s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == 1 and truth == [True]


INPUT_GRADIENT = """\
    import tensorflow as tf

    @tf.function
    def grad(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.nn.sigmoid(x)
      return tape.gradient(y, x)

    TRUTH = [grad(tf.linspace(-10.0, 10.0, 21)) is None]
    """


def test_a_traced_step_differentiating_its_input_and_reading_no_variable_is_analyzed(tmp_path: Path, capsys: Any) -> None:
    # The autodiff guide's sigmoid gradient in a tf.function was "NoVariablesError: grad reads no variable".
    path = script(tmp_path, INPUT_GRADIENT)
    truth = alone(path)["TRUTH"]
    code, document = run_json(capsys, path)
    (step,) = document["steps"]
    assert step["error"] is None
    (site,) = step["report"]["gradient_sites"]
    assert [s["name"] for s in site["sources"]] == ["x"]
    assert [s["verdict"] != "receives" for s in site["sources"]] == [s["tensorflow_none"] for s in site["sources"]] == truth
    assert code == 0 and truth == [False]
