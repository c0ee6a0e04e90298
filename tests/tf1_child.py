"""TensorFlow 1 cases, run by tests/test_tf1.py in a fresh interpreter (v2 behaviour is disabled
for the whole process). Each case builds its graph, hands its training ``Session.run`` to
``flowcheck.run.tf1.analyze_session_run`` and prints one JSON line: flowcheck's answer, and the truth,
computed here with TensorFlow's own ``tf.gradients`` on the same graph. Lines marked ``# CUT`` are
where a barrier is expected; the test reads their numbers from this file.
"""

import json
import runpy
import sys

import numpy as np
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()

from tensorflow.python.client import session as session_lib  # noqa: E402

from flowcheck.run import tf1 as _tf1  # noqa: E402

_tf1.install()
rng = np.random.default_rng(0)


def values(sess, variables):
    return [np.array(v, copy=True) for v in sess.run(list(variables))]


def truth(call):
    # TensorFlow's own answer, one source at a time, with the call's own stop_gradients.
    # (MonitoredTrainingSession finalizes the graph; flowcheck itself added nothing to it.)
    stops = list(call.stop_gradients) or None
    finalized = call.graph.finalized
    if finalized:
        call.graph._unsafe_unfinalize()
    try:
        return [tf.gradients(list(call.targets), [s], stop_gradients=stops)[0] is not None for s in call.sources]
    finally:
        if finalized:
            call.graph.finalize()


def report_json(name, sess, fetches, feed, **extra):
    graph = sess.graph
    state = _tf1.graph_variables(graph)
    before = values(sess, state)
    ops_before = len(graph.get_operations())
    report = _tf1.analyze_session_run(sess, fetches, feed)
    ops_after = len(graph.get_operations())
    after = values(sess, state)
    restored = all(a.tobytes() == b.tobytes() and a.dtype == b.dtype for a, b in zip(before, after))
    sites = []
    for site, call in zip(report.gradient_sites, _tf1.dependent_calls(sess, fetches)):
        sites.append({
            "kind": site.kind,
            "line": site.source.line if site.source else None,
            "targets": list(site.targets),
            "names": [s.name for s in site.sources],
            "verdicts": [s.verdict.value for s in site.sources],
            "tensorflow_none": [s.tensorflow_none for s in site.sources],
            "truth": truth(call),
            "barriers": [[[b.kind.value, b.source.line if b.source else None] for b in s.barriers] for s in site.sources],
            "agrees": site.agrees,
            "watch": site.watch,
        })
    v = report.verification
    out = {
        "name": name,
        "sites": sites,
        "never_trained": [r.name for r in report.never_trained],
        "restored": restored,
        "state_count": len(state),
        "ops_added": ops_after - ops_before,
        "verification": None if v is None else {
            "agrees": v.agrees, "problems": list(v.problems),
            "checks": [[c.name, c.predicted, c.gradient.value, c.changed, c.agrees] for c in v.variables],
        },
        "notes": list(report.notes),
        "after_step": list(report.after_step),
    }
    out.update(extra)
    print(json.dumps(out))
    return report


def feed_for(*placeholders):
    return {p: rng.normal(size=[d or 2 for d in p.shape.as_list()]).astype(np.float32) for p in placeholders}


def seed(path):
    """examples/seed_tf1.py itself, with its first training Session.run analyzed."""
    original = session_lib.BaseSession.run
    seen = {}

    def run(self, fetches, feed_dict=None, *args, **kwargs):
        if "report" not in seen and feed_dict:
            session_lib.BaseSession.run = original
            try:
                state = _tf1.graph_variables(self.graph)
                before = values(self, state)
                seen["report"] = _tf1.analyze_session_run(self, fetches, feed_dict)
                seen["truth"] = [truth(call) for call in _tf1.dependent_calls(self, fetches)]
                seen["restored"] = all(a.tobytes() == b.tobytes() for a, b in zip(before, values(self, state)))
                result = original(self, fetches, feed_dict, *args, **kwargs)
                seen["session_after"] = [np.asarray(a).tolist() for a in values(self, state)]
                return result
            finally:
                session_lib.BaseSession.run = run
        return original(self, fetches, feed_dict, *args, **kwargs)

    session_lib.BaseSession.run = run
    try:
        runpy.run_path(path, run_name="__main__")
    finally:
        session_lib.BaseSession.run = original
    report = seen["report"]
    site = report.gradient_sites[0]
    print(json.dumps({
        "name": "seed",
        "kind": site.kind,
        "line": site.source.line,
        "names": [s.name for s in site.sources],
        "verdicts": [s.verdict.value for s in site.sources],
        "tensorflow_none": [s.tensorflow_none for s in site.sources],
        "barriers": [[[b.kind.value, b.source.line, b.source.code] for b in s.barriers] for s in site.sources],
        "agrees": site.agrees,
        "truth": seen["truth"],
        "verification_agrees": report.verification.agrees,
        "checks": [[c.name, c.gradient.value, c.changed] for c in report.verification.variables],
        "after_step": list(report.after_step),
        "session_after": seen["session_after"],
        "flowcheck_after": {k: after.tolist() for k, (_, after) in report.step_values.items()},
        "restored": seen["restored"],
    }))


def dqn():
    with tf.Graph().as_default():
        state = tf.placeholder(tf.float32, [4, 3])
        next_state = tf.placeholder(tf.float32, [4, 3])
        reward = tf.placeholder(tf.float32, [4])
        online = tf.Variable(tf.random_normal([3, 2], seed=1))
        target_net = tf.Variable(tf.random_normal([3, 2], seed=2))
        q = tf.reduce_max(tf.matmul(state, online), axis=1)
        next_q = tf.reduce_max(tf.matmul(next_state, target_net), axis=1)
        target = tf.stop_gradient(reward + 0.9 * next_q)  # CUT dqn
        loss = tf.reduce_mean(tf.square(q - target))
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("dqn", sess, train, feed_for(state, next_state, reward))


def int_cast():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [3, 2])
        w1 = tf.Variable(tf.ones([2, 3]))
        w2 = tf.Variable(tf.ones([3, 1]))
        buckets = tf.cast(tf.matmul(x, w1), tf.int32)  # CUT cast
        loss = tf.reduce_sum(tf.matmul(tf.cast(buckets, tf.float32), w2))
        train = tf.train.GradientDescentOptimizer(0.5).minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("int_cast", sess, [loss, train], feed_for(x))


def slots(optimizer_name):
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [5, 3])
        y = tf.placeholder(tf.float32, [5, 1])
        dense = tf.Variable(tf.random_normal([3, 1], seed=3), name="dense", use_resource=True)
        gate = tf.Variable(tf.ones([3]), name="gate")
        step = tf.train.get_or_create_global_step()
        pred = tf.matmul(x * tf.round(gate), dense)  # CUT round
        loss = tf.reduce_mean(tf.square(pred - y))
        opt = (tf.train.MomentumOptimizer(0.1, 0.9) if optimizer_name == "momentum"
               else tf.train.AdamOptimizer(0.01))
        train = opt.minimize(loss, var_list=[dense, gate], global_step=step)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json(optimizer_name, sess, train, feed_for(x, y), step_after=int(sess.run(step)))


def compute_apply():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [2, 2])
        a = tf.Variable(tf.ones([2, 2]), name="a")
        b = tf.Variable(tf.ones([2, 2]), name="b")
        unused = tf.Variable(tf.zeros([1]), name="unused")
        loss = tf.reduce_sum(tf.matmul(x, a)) + tf.reduce_sum(tf.cast(tf.argmax(tf.matmul(x, b), axis=1), tf.float32))  # CUT argmax
        opt = tf.train.GradientDescentOptimizer(0.1)
        grads_and_vars = opt.compute_gradients(loss, var_list=[a, b, unused])
        train = opt.apply_gradients([(g, v) for g, v in grads_and_vars if g is not None])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("compute_apply", sess, train, feed_for(x))


def not_in_var_list():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [2, 2])
        encoder = tf.Variable(tf.ones([2, 2]), name="encoder")
        head = tf.Variable(tf.ones([2, 1]), name="head")
        frozen = tf.Variable(tf.ones([2, 2]), name="frozen", trainable=False)
        loss = tf.reduce_sum(tf.matmul(tf.matmul(tf.matmul(x, frozen), encoder), head))
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss, var_list=[head])
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("not_in_var_list", sess, train, feed_for(x))


def direct_gradients():
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [3, 2])
        w = tf.Variable(tf.ones([2, 2]), name="w")
        v = tf.Variable(tf.ones([2, 2]), name="v")
        hidden = tf.matmul(x, w)  # CUT stop_gradients
        loss = tf.reduce_sum(tf.matmul(hidden, v))
        grads = tf.gradients(loss, [w, v, x], stop_gradients=[hidden])
        update = [tf.assign_sub(w, 0.1 * grads[0]) if grads[0] is not None else tf.no_op(),
                  tf.assign_sub(v, 0.1 * grads[1])]
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("direct_gradients", sess, update, feed_for(x))


def control_flow_v1():
    """A while_loop (control flow v1: a cycle in the graph) writing a TensorArray, and a tf.cond."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [2, 4])
        ids = tf.placeholder(tf.int32, [2])
        w = tf.Variable(tf.ones([1, 3]), name="w")
        u = tf.Variable(tf.ones([3, 3]) * 0.1, name="u")
        skip = tf.Variable(tf.ones([3, 3]), name="skip")
        emb = tf.Variable(tf.ones([10, 3]), name="emb")
        scale = tf.Variable(2.0, name="scale")
        never = tf.Variable(tf.ones([3]), name="never")

        def body(t, h, written):
            h = tf.tanh(tf.matmul(x[:, t:t + 1], w) + tf.matmul(h, u)) + tf.stop_gradient(tf.matmul(h, skip))  # CUT loop
            return t + 1, h, written.write(t, h)

        _, h, written = tf.while_loop(lambda t, h, written: t < 4, body,
                                      [0, tf.zeros([2, 3]), tf.TensorArray(tf.float32, size=4)])
        seq = tf.reduce_sum(written.stack()) + tf.reduce_sum(tf.nn.embedding_lookup(emb, ids))
        picked = tf.cond(x[0, 0] > 0, lambda: seq * scale, lambda: seq + 1.0)
        frozen = tf.while_loop(lambda i, v: i < 2, lambda i, v: (i + 1, v * never), [0, tf.ones([3])], back_prop=False)  # CUT back_prop
        loss = picked + tf.reduce_sum(frozen[1])
        train = tf.train.AdamOptimizer(0.01).minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            feed = feed_for(x)
            feed[ids] = np.array([1, 2], np.int32)
            report_json("control_flow_v1", sess, train, feed)


def monitored_session():
    """MonitoredTrainingSession: the raw session under its wrappers runs the step (as flowcheck run sees it)."""
    original = session_lib.BaseSession.run
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [4, 2])
        w = tf.get_variable("w", [2, 1])
        bucket = tf.get_variable("bucket", [1])
        step = tf.train.get_or_create_global_step()
        loss = tf.reduce_sum(tf.matmul(x, w)) + tf.cast(tf.argmax(bucket), tf.float32)  # CUT mts
        train = tf.train.AdamOptimizer(0.1).minimize(loss, global_step=step)

        def run(self, fetches, feed_dict=None, *args, **kwargs):
            if feed_dict and _tf1.depends_on_gradient_site(self, fetches):
                session_lib.BaseSession.run = original
                try:
                    report_json("monitored_session", self, fetches, feed_dict)
                finally:
                    session_lib.BaseSession.run = run
            return original(self, fetches, feed_dict, *args, **kwargs)

        with tf.train.MonitoredTrainingSession() as sess:
            session_lib.BaseSession.run = run
            try:
                sess.run(train, feed_dict=feed_for(x))
            finally:
                session_lib.BaseSession.run = original


def v2_api_in_graph_mode():
    """TensorFlow 2's tf.gradients and resource variables in a graph (no tf.function)."""
    import tensorflow as tf2

    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [4, 2])
        w = tf2.Variable(tf2.ones([2, 1]))
        v = tf2.Variable(tf2.ones([2, 1]))
        loss = tf2.reduce_sum(tf2.matmul(x, w)) + tf2.reduce_sum(tf2.stop_gradient(tf2.matmul(x, v)))  # CUT v2
        gw, gv = tf2.gradients(loss, [w, v])
        train = tf.assign_sub(w, 0.1 * gw)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("v2_api", sess, train, feed_for(x), shapes=[list(r.shape) for r in _tf1_report_variables(sess, train)])


def _tf1_report_variables(sess, fetches):
    return _tf1.analyze_session_run(sess, fetches, feed_for(*[op.outputs[0] for op in sess.graph.get_operations()
                                                               if op.type == "Placeholder"]), verify=False).variables


def input_pipeline():
    """A step that reads a tf.data iterator and draws dropout masks: not re-run, and said so."""
    with tf.Graph().as_default():
        data = tf.data.Dataset.from_tensor_slices(np.ones((8, 2), np.float32)).batch(4)
        x = tf.data.make_one_shot_iterator(data).get_next()
        w = tf.Variable(tf.ones([2, 1]), name="w")
        loss = tf.reduce_sum(tf.nn.dropout(tf.matmul(x, w), rate=0.5))
        train = tf.train.AdamOptimizer().minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("input_pipeline", sess, train, None, first_batch=np.asarray(sess.run(x)).tolist())


def gan_one_run():
    """Two minimize calls fetched in one run; a variable made with collections=[] (in no collection)."""
    with tf.Graph().as_default():
        z = tf.placeholder(tf.float32, [4, 2])
        real = tf.placeholder(tf.float32, [4, 3])
        with tf.variable_scope("gen"):
            g_w = tf.get_variable("w", [2, 3])
        with tf.variable_scope("disc"):
            d_w = tf.get_variable("w", [3, 1])
        scale = tf.Variable(tf.ones([3]), collections=[], name="scale")
        fake = tf.matmul(z, g_w) * scale
        d_loss = tf.reduce_mean(tf.nn.softplus(tf.matmul(tf.stop_gradient(fake), d_w)) + tf.nn.softplus(-tf.matmul(real, d_w)))  # CUT gan
        g_loss = tf.reduce_mean(tf.nn.softplus(-tf.matmul(fake, d_w)))
        d_train = tf.train.AdamOptimizer(0.1).minimize(d_loss, var_list=[d_w, g_w])
        g_train = tf.train.AdamOptimizer(0.1).minimize(g_loss, var_list=[g_w, scale])
        with tf.Session() as sess:
            sess.run([tf.global_variables_initializer(), scale.initializer])
            before = sess.run(scale)
            report_json("gan_one_run", sess, [d_train, g_train], feed_for(z, real),
                        scale_restored=bool(np.array_equal(before, sess.run(scale))))


def function_and_custom_gradient():
    """A tf.function called in a TF1 graph (a call op, its body followed) and a tf.custom_gradient."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [3, 2])
        a = tf.Variable(tf.ones([2, 2]), name="a")
        b = tf.Variable(tf.ones([2, 2]), name="b")
        c = tf.Variable(tf.ones([2, 2]), name="c")

        @tf.custom_gradient
        def no_gradient(v):
            return tf.identity(v), lambda dy: None

        @tf.function
        def head(h):
            return tf.matmul(h, c)

        loss = tf.reduce_sum(head(tf.matmul(x, a))) + tf.reduce_sum(no_gradient(tf.matmul(x, b)))  # CUT custom
        train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            report_json("function_and_custom_gradient", sess, train, feed_for(x))


def hidden_counter():
    """The step writes a variable in no collection: flowcheck could not restore it, so it does not run it."""
    with tf.Graph().as_default():
        x = tf.placeholder(tf.float32, [3, 2])
        w = tf.Variable(tf.ones([2, 1]), name="w")
        count = tf.Variable(0.0, collections=[], trainable=False, name="count")
        with tf.control_dependencies([tf.assign_add(count, 1.0)]):
            train = tf.train.GradientDescentOptimizer(0.1).minimize(tf.reduce_sum(tf.matmul(x, w)))
        with tf.Session() as sess:
            sess.run([tf.global_variables_initializer(), count.initializer])
            report_json("hidden_counter", sess, train, feed_for(x), count_after=float(sess.run(count)))


CASES = {"hidden_counter": hidden_counter, "function_and_custom_gradient": function_and_custom_gradient, "gan_one_run": gan_one_run, "control_flow_v1": control_flow_v1, "monitored_session": monitored_session, "v2_api": v2_api_in_graph_mode,
         "input_pipeline": input_pipeline, "dqn": dqn, "int_cast": int_cast, "momentum": lambda: slots("momentum"), "adam": lambda: slots("adam"),
         "compute_apply": compute_apply, "not_in_var_list": not_in_var_list, "direct_gradients": direct_gradients}

if __name__ == "__main__":
    for case in sys.argv[1:]:
        seed(case) if case.endswith(".py") else CASES[case]()
