"""Gradient-flow snapshots: a report's verdicts written as text, read back and compared.

* :mod:`.build` -- a report (or a step's gradient sites) as a :class:`~.build.Snapshot`, and its text;
* :mod:`.parse` -- the text read back; :mod:`.diff` -- what changed, in words;
* :mod:`.fixture` -- the pytest fixture that pins a snapshot.
"""
