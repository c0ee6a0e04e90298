"""Stage 5 (TensorFlow): one real optimizer step, then every piece of state restored.

* :mod:`.loss` -- a loss function stepped by an optimizer flowcheck supplies;
* :mod:`.step` -- the user's own training step run once, as training would run it;
* :mod:`.tf1` -- a TensorFlow 1 train op run in the user's session.
"""
