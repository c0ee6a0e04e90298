"""Stage 2: a trace as a ``networkx.DiGraph`` whose every edge knows whether autodiff carries a gradient.

* :mod:`.build` -- the graph of a traced function (nested functions, ``cond``/``case`` branches, ``while`` bodies);
* :mod:`.ops` -- all op knowledge: TensorFlow's own gradient registry asked once per op signature;
* :mod:`.tf1` -- the graph of a TensorFlow 1 ``tf.Graph`` (``Session.run`` code).
"""
