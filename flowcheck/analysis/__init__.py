"""Stage 3, pure: what the graph says about each variable, computed once over the ``networkx`` graph.

* :mod:`.verdicts` -- verdicts (receives / blocked / unused), the cuts that block every path, gradient errors;
* :mod:`.sites` -- the same questions per gradient site, on the ops that the site's tape recorded.

Nothing here imports TensorFlow: the graph's plain attributes are all it reads.
"""
