"""The pytest plugin, run with pytest's own ``pytester`` on a user's test file."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

# Imported here so that pytester's in-process runs find them loaded: it drops the modules a run
# imports, and TensorFlow cannot be imported twice in one process.
import flowcheck.testing  # noqa: F401
import keras  # noqa: F401
import tensorflow  # noqa: F401

pytest_plugins = ["pytester"]

USERS_TESTS = textwrap.dedent(
    '''
    import keras
    import tensorflow as tf

    import flowcheck

    keras.utils.set_random_seed(0)
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="g_out")], name="generator")
    discriminator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="d_out")], name="discriminator")
    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    z = tf.ones((3, 4))


    @tf.function
    def generator_step(z):
        fake = tf.stop_gradient(generator(z, training=True))
        logits = discriminator(fake, training=True)
        return bce(tf.ones_like(logits), logits)


    @tf.function
    def discriminator_step(z):
        logits = discriminator(tf.stop_gradient(generator(z, training=True)), training=True)
        return bce(tf.zeros_like(logits), logits)


    def test_generator_learns():
        flowcheck.assert_gradient_flow(generator_step, z, receives="generator/*")


    def test_discriminator_step_leaves_the_generator_alone():
        flowcheck.assert_gradient_flow(discriminator_step, z, receives="discriminator/*", blocked="generator/*")
    '''
)


def _line(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), start=1) if text in line)


@pytest.mark.dot
def test_a_failed_assertion_shows_the_users_line_and_the_saved_html_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gan=USERS_TESTS)
    result = pytester.runpytest("--flowcheck-report-dir", "reports")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    saved = Path(pytester.path, "reports", "test_gan.py__test_generator_learns.html").resolve()
    assert f"flowcheck report: {saved}" in output
    assert saved.is_file()
    html = saved.read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "generator/g_out/kernel" in html
    # The passing test saved nothing; the run ends by listing what was saved.
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    result.stdout.fnmatch_lines(["*- flowcheck: 1 report saved -*", str(saved)])

    # The failure itself: the user's line, not flowcheck's frames.
    line = _line(USERS_TESTS.lstrip("\n"), "fake = tf.stop_gradient(generator(")
    result.stdout.fnmatch_lines([
        "*GradientFlowAssertionError: gradient flow of generator_step breaks the contract: 2 variables differ",
        "*expected receives, found blocked:",
        "*generator/g_out/kernel",
        "*generator/g_out/bias",
        "*every gradient path from them to the loss is cut at:",
        f"*test_gan.py:{line}: StopGradient 'StopGradient' (tf.stop_gradient)",
        "*fake = tf.stop_gradient(generator(z, training=True))",
    ])
    assert re.search(r"flowcheck[/\\]testing\.py", output) is None  # __tracebackhide__ hides our frames
    assert re.search(r"^>\s+flowcheck\.assert_gradient_flow\(generator_step, z", output, re.MULTILINE)


def test_without_the_option_nothing_is_saved(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gan=USERS_TESTS)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    assert "flowcheck report:" not in result.stdout.str()
    assert not Path(pytester.path, "reports").exists()
    result.stdout.fnmatch_lines(["*breaks the contract: 2 variables differ"])


def test_the_option_is_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--flowcheck-report-dir=DIR*"])


def test_a_report_that_cannot_be_saved_still_fails_the_test_with_the_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gan=USERS_TESTS)
    Path(pytester.path, "reports").write_text("a file, not a directory")
    result = pytester.runpytest("--flowcheck-report-dir", "reports")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*flowcheck report: not saved (*Error: *"])


@pytest.mark.dot
def test_an_expected_failure_saves_no_report(pytester: pytest.Pytester) -> None:
    # A suite that marks a known break xfail: its report was saved and listed as a finding.
    pytester.makepyfile(test_gan=USERS_TESTS.replace(
        "def test_generator_learns", "@__import__('pytest').mark.xfail(reason='known')\ndef test_generator_learns"))
    result = pytester.runpytest("--flowcheck-report-dir", "reports")
    result.assert_outcomes(passed=1, xfailed=1)
    assert "report saved" not in result.stdout.str()
    assert not list(Path(pytester.path, "reports").glob("*.html"))
