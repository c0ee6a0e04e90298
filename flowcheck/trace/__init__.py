"""Stage 1 (TensorFlow): a target -- a ``tf.function``, a plain callable, a Keras model, a training step -- traced.

* :mod:`.target` -- what to trace and the :class:`~.target.Traced` it gives: the concrete function, the
  user's variables behind its captures, its losses;
* :mod:`.owners`, :mod:`.distributed` -- where the variables are found; replica components as one variable;
* :mod:`.sites`, :mod:`.recording` -- gradient sites: every ``tape.gradient`` / ``jacobian`` / ``tf.gradients``
  call recorded with its sources, its tape's semantics and TensorFlow's own answer;
* :mod:`.steps`, :mod:`.state` -- training steps: Keras ``train_step``, steps with their own tape, the state a step touches;
* :mod:`.eager`, :mod:`.eager_sites` -- plain callables judged as called, eagerly;
* :mod:`.reuse`, :mod:`.tf1` -- a step traced once for the user and for flowcheck; TensorFlow 1 gradient calls.
"""
