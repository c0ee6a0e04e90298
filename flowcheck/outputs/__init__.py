"""What a report says in words: the terminal summary, the JSON document, ``--expect-*`` patterns.

* :mod:`.text` -- the summary (plain and ``rich``) and the JSON report (its schema in the docstring);
* :mod:`.sites` -- the same for a training step's gradient sites;
* :mod:`.expect` -- ``--expect-receives`` / ``--expect-blocked`` patterns matched against names and owners.

Shared sentences live in :mod:`flowcheck._phrases`; nothing here prints or imports TensorFlow.
"""
