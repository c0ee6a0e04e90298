"""The ``flowcheck`` command: thin argument handling over the library (``main(argv) -> int`` in :mod:`.main`).

* :mod:`.main` -- ``flowcheck analyze`` and the parser of every subcommand;
* :mod:`.run` -- ``flowcheck run``'s options, outputs and exit status;
* :mod:`.load`, :mod:`.inputs` -- ``PATH[:NAME]`` to a target and its example inputs;
* :mod:`.expect`, :mod:`.outputs`, :mod:`.snapshot` -- ``--expect-*``, ``-o`` files, ``--snapshot`` / ``--check``.
"""
