"""The user's own line and column of each op (frames, AutoGraph's source maps, Python's code positions).

* :mod:`.lines` -- :class:`~.lines.SourceLine`, paths as shown, the user's frame in a stack;
* :mod:`.positions` -- the exact position of each op, recorded while tracing, AutoGraph's rewrites undone;
* :mod:`.callsite` -- the call on a line that made an op, when the positions do not tell;
* :mod:`.op` -- an op's line, from all three.
"""
