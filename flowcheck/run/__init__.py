"""``flowcheck run``: the user's training script run as ``python`` runs it, each training step analyzed at its first call.

* :mod:`.script` -- the script as ``__main__``, its exit and exceptions;
* :mod:`.intercept` -- the hooks: Keras ``fit``, ``tf.function`` steps, eager tapes, ``Session.run``;
* :mod:`.tf1` -- TensorFlow 1 ``Session.run`` steps analyzed and verified in the user's session;
* :mod:`.step` -- one analyzed step (plain data); :mod:`.report` -- the summary and JSON of a run.
"""
