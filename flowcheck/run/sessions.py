"""``flowcheck run``'s TF1 hooks: ``Session.run`` and the session callables TF1-era Keras trains through.

A step is a ``Session.run`` whose fetches compute a recorded gradient call (:mod:`flowcheck.run.tf1`
says which). Keras in graph mode (``tf_keras`` under ``tf.disable_v2_behavior()``) never calls
``Session.run`` for ``fit``: its backend function makes a callable once
(``Session._make_callable_from_options``) and calls it per batch with the feeds' values in order.
Each such call is judged as the ``Session.run`` it stands for: the callable's fetches and target
ops, its feeds by position. ``Session.make_callable(fetches)`` without a ``feed_list`` bypasses
``Session.run`` too: its callable runs ``Session.run(fetches)`` instead, which gives the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowcheck.run.step import Step
from flowcheck.source.lines import call_site

Interceptor = Any  # flowcheck.run.intercept.Interceptor, which imports this module: its hooks' shared state
SessionAnalyzer = Any  # flowcheck.run.intercept.SessionAnalyzer: the tf1 stage's questions about a run

__all__ = ["callable_hook", "make_callable_hook", "run_hook"]

Run = Callable[..., Any]  # Session.run's signature: (session, fetches, feed_dict, *args, **kwargs)


def run_hook(interceptor: Interceptor, analyzer: SessionAnalyzer, original: Run) -> Run:
    """``Session.run`` that judges the first run of each step and stops the script at a step's second run."""
    hooks = interceptor

    def run(session: Any, fetches: Any, feed_dict: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not hooks._active():  # noqa: SLF001 -- the interceptor's own state, shared with its hooks
            return original(session, fetches, feed_dict, *args, **kwargs)
        with hooks._inside():  # noqa: SLF001 -- the step is the gradient calls the run computes
            key = analyzer.key(session, fetches)
            seen = key is not None and key in hooks._seen  # noqa: SLF001
            report = None if key is None or seen else analyzer(session, fetches, feed_dict)
        if seen:
            hooks._again()  # noqa: SLF001
        if report is None:
            return original(session, fetches, feed_dict, *args, **kwargs)
        hooks._seen[key] = session  # noqa: SLF001
        step = Step("tf1 Session.run", "Session.run", call_site(), report=report, verification=report.verification)
        hooks.steps.append(step)
        with hooks._inside():  # noqa: SLF001
            if not getattr(report, "unrepeatable", ()):
                return original(session, fetches, feed_dict, *args, **kwargs)
            # A step that cannot run twice: the script's own run of it is its verification.
            result = report.verify_in_script_run(lambda f: original(session, f, feed_dict, *args, **kwargs), fetches)
            step.verification = report.verification
            return result

    return run


def callable_hook(hooks: Interceptor, analyzer: SessionAnalyzer, original: Any, real_run: Run) -> Any:
    """``Session._make_callable_from_options`` whose callables are judged as the ``Session.run`` they stand for."""

    def make(session: Any, callable_options: Any) -> Any:
        made = original(session, callable_options)
        try:
            graph = session.graph
            fetch = [graph.as_graph_element(name) for name in callable_options.fetch]
            targets = [graph.as_graph_element(name) for name in callable_options.target]
            feeds = [graph.as_graph_element(name) for name in callable_options.feed]
        except (KeyError, ValueError, TypeError):  # a name not in the graph: the callable as it is
            return made
        return _JudgedCallable(made, session, hooks, analyzer, (fetch, targets, feeds), real_run)

    return make


class _JudgedCallable:
    """A session callable whose calls pass through :func:`run_hook` as ``Session.run(fetch + targets, feeds)``."""

    def __init__(self, made: Any, session: Any, hooks: Interceptor, analyzer: SessionAnalyzer,
                 names: tuple[list[Any], list[Any], list[Any]], real_run: Run) -> None:
        self._made, self._session, self._hooks, self._analyzer, self._real_run = made, session, hooks, analyzer, real_run
        self._fetch, self._targets, self._feeds = names

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fetches = [*self._fetch, *self._targets]
        feed_dict = dict(zip(self._feeds, args))

        def original(session: Any, f: Any, feeds: Any, *_: Any, **__: Any) -> Any:
            if f is fetches:  # the script's own call
                return self._made(*args, **kwargs)
            values = self._real_run(session, f, feeds)  # flowcheck's run beside it: the fetches first
            if isinstance(f, list) and f and f[0] is fetches:
                values[0] = values[0][:len(self._fetch)]  # the callable returns no value for a target op
            return values

        return run_hook(self._hooks, self._analyzer, original)(self._session, fetches, feed_dict)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._made, name)



def make_callable_hook(original: Any) -> Any:
    """``Session.make_callable`` whose callables without feeds make their runs through ``Session.run``."""

    def make_callable(session: Any, fetches: Any, feed_list: Any = None, accept_options: bool = False) -> Any:
        made = original(session, fetches, feed_list, accept_options)
        if feed_list is not None:
            return made  # it calls Session.run itself

        def call(*args: Any, **kwargs: Any) -> Any:
            if args or (kwargs and not accept_options):
                return made(*args, **kwargs)  # TensorFlow's own error for arguments it does not take
            return session.run(fetches, **kwargs)

        return call

    return make_callable
