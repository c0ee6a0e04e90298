"""Gradient-flow snapshots as plain data: the text format and the diff (no TensorFlow needed).

Snapshots are built from literal sections, as networkx's tests build graphs from edge lists.
"""

from __future__ import annotations

import tomllib

import pytest

from flowcheck._model import Verdict
from flowcheck.errors import SnapshotError
from flowcheck.snapshot.diff import diff_snapshots, format_diff
from flowcheck.snapshot.model import FORMAT_VERSION, Cut, Flow, Section, Snapshot
from flowcheck.snapshot.text import format_snapshot, parse_snapshot

RECEIVES = Flow(Verdict.RECEIVES)
STOP = Cut("stop_gradient", "StopGradient", "model.py", 42)


def snap(*sections: Section, raises: tuple[Cut, ...] = ()) -> Snapshot:
    return Snapshot("loss_fn", tuple(sections), raises)


def loss(name: str = "loss", **flows: Flow) -> Section:
    return Section("loss", name, tuple(sorted((k.replace("__", "/"), v) for k, v in flows.items())))


def blocked(*cuts: Cut) -> Flow:
    return Flow(Verdict.BLOCKED, tuple(sorted(cuts)))


def lines(old: Snapshot, new: Snapshot) -> list[str]:
    return [line.strip() for line in format_diff(diff_snapshots(old, new))]


def test_the_text_is_sorted_toml_one_variable_a_line() -> None:
    s = snap(
        loss("g_loss", generator__dense__kernel=RECEIVES),
        loss("d_loss", generator__dense__kernel=blocked(STOP, Cut("dtype", "Cast", "a b/m.py", 7)),
             discriminator__out__bias=RECEIVES),
        Section("site", "tape.gradient", (("w", RECEIVES),), "train.py", 12),
        raises=(Cut("no_gradient", "DenseBincount", "model.py", 50),),
    )
    text = format_snapshot(s)
    assert text == (
        "# flowcheck gradient-flow snapshot: review changes like code; rewrite with --update\n"
        f"format = {FORMAT_VERSION}\n"
        'target = "loss_fn"\n'
        'raises = ["no_gradient DenseBincount at model.py:50"]\n'
        "\n"
        '[loss."d_loss"]\n'
        '"discriminator/out/bias" = { verdict = "receives" }\n'
        '"generator/dense/kernel" = { verdict = "blocked", cut = ["dtype Cast at a b/m.py:7", '
        '"stop_gradient StopGradient at model.py:42"] }\n'
        "\n"
        '[loss."g_loss"]\n'
        '"generator/dense/kernel" = { verdict = "receives" }\n'
        "\n"
        '[site."tape.gradient"."train.py:12"]\n'
        '"w" = { verdict = "receives" }\n'
    )
    assert parse_snapshot(text) == s
    assert format_snapshot(parse_snapshot(text)) == text
    # Real TOML: any TOML reader sees the same structure.
    data = tomllib.loads(text)
    assert data["loss"]["d_loss"]["generator/dense/kernel"]["cut"][1] == "stop_gradient StopGradient at model.py:42"
    assert data["site"]["tape.gradient"]["train.py:12"] == {"w": {"verdict": "receives"}}


def test_strange_names_survive_the_round_trip() -> None:
    s = snap(loss('a "quoted"\\name', **{'x\ty': RECEIVES, "é/ü\x7f": RECEIVES}))
    text = format_snapshot(s)
    assert parse_snapshot(text) == s
    assert tomllib.loads(text)["loss"]['a "quoted"\\name']["é/ü\x7f"] == {"verdict": "receives"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('format = 2\n[loss."loss"]\n', "format 2; this flowcheck reads snapshot format 1"),
        ('[loss."loss"]\n"w" = { verdict = "receives" }\n', "no 'format = N' line"),
        ('format = 1\n[loss."loss"]\n"w" = { verdict = "sometimes" }\n', "snap.toml:3: unknown verdict 'sometimes'"),
        ('format = 1\n[loss."loss"]\n"w" = { verdict = "blocked", cut = ["StopGradient"] }\n', "snap.toml:3: a barrier is"),
        ('format = 1\n[gradient."x"]\n', "snap.toml:2: unknown section kind 'gradient'"),
        ('format = 1\n[loss."loss"]\n"w" = { verdict = "receives" \n', "snap.toml:3: '{' is not closed"),
        ("format = 1\n<<<<<<< HEAD\n", "snap.toml:2: cannot read '<<<<<<< HEAD'"),
    ],
)
def test_a_broken_file_is_one_clear_error_with_its_line(text: str, message: str) -> None:
    with pytest.raises(SnapshotError) as info:
        parse_snapshot(text, "snap.toml")
    assert message in str(info.value)


def test_a_cut_gradient_is_one_line_naming_the_variable_and_the_barrier() -> None:
    old = snap(loss(encoder__dense__kernel=RECEIVES, head__kernel=RECEIVES))
    new = snap(loss(encoder__dense__kernel=blocked(STOP), head__kernel=RECEIVES))
    assert lines(old, new) == ["encoder/dense/kernel: receives -> blocked (StopGradient at model.py:42)"]
    assert lines(new, old) == ["encoder/dense/kernel: blocked (StopGradient at model.py:42) -> receives"]


def test_another_barrier_in_place_of_the_first_is_a_change() -> None:
    cast = Cut("dtype", "Cast", "model.py", 42)
    old, new = snap(loss(w=blocked(STOP))), snap(loss(w=blocked(cast)))
    assert lines(old, new) == ["w: blocked (StopGradient at model.py:42) -> blocked (Cast (dtype) at model.py:42)"]


def test_a_barrier_that_only_moved_is_not_a_change_but_the_footer_says_so() -> None:
    moved = Cut("stop_gradient", "StopGradient", "model.py", 45)
    old = snap(loss(a=blocked(STOP), b=blocked(STOP), c=RECEIVES))
    new = snap(loss(a=blocked(moved), b=blocked(moved), c=RECEIVES))
    diff = diff_snapshots(old, new)
    assert diff.same
    assert lines(old, new) == [
        "(not a change: 1 barrier only moved to another line: StopGradient at model.py:42 -> 45)"
    ]


def test_the_same_op_in_another_file_is_a_change() -> None:
    elsewhere = Cut("stop_gradient", "StopGradient", "layers.py", 42)
    assert not diff_snapshots(snap(loss(w=blocked(STOP))), snap(loss(w=blocked(elsewhere)))).same


def test_variables_that_appear_or_disappear() -> None:
    old = snap(loss(encoder__kernel=RECEIVES, head__kernel=blocked(STOP)))
    new = snap(loss(encoder__kernel=RECEIVES, extra__kernel=RECEIVES))
    assert lines(old, new) == [
        "extra/kernel: appeared, receives",
        "head/kernel: disappeared (was blocked (StopGradient at model.py:42))",
    ]


def test_sections_that_appear_are_named_and_changes_go_under_their_section() -> None:
    old = snap(loss("d_loss", g=blocked(STOP)))
    new = snap(loss("d_loss", g=RECEIVES), loss("g_loss", g=RECEIVES, d=Flow(Verdict.UNUSED)))
    assert [line.rstrip() for line in format_diff(diff_snapshots(old, new))] == [
        "  loss 'g_loss':",
        "    appeared: 2 variables (1 receives, 1 unused)",
        "  loss 'd_loss':",
        "    g: blocked (StopGradient at model.py:42) -> receives",
    ]


def test_a_gradient_site_at_another_line_of_its_file_is_the_same_site() -> None:
    def site(line: int, flow: Flow) -> Section:
        return Section("site", "tape.gradient", (("w", flow),), "train.py", line)

    diff = diff_snapshots(snap(site(10, RECEIVES)), snap(site(14, RECEIVES)))
    assert diff.same and diff.moved[0].site
    assert lines(snap(site(10, RECEIVES)), snap(site(14, blocked(STOP)))) == [
        "site tape.gradient at train.py:14:",
        "w: receives -> blocked (StopGradient at model.py:42)",
        "(not a change: 1 site only moved to another line: site tape.gradient at train.py:10 -> 14)",
    ]
    other = Section("site", "optimizer.minimize", (("w", RECEIVES),), "train.py", 10)
    assert lines(snap(site(10, RECEIVES)), snap(other)) == [
        "site tape.gradient at train.py:10:", "disappeared (it had 1 variable)",
        "site optimizer.minimize at train.py:10:", "appeared: 1 variable (1 receives)",
    ]


def test_an_op_where_the_tape_raises_is_part_of_the_flow() -> None:
    bincount = Cut("no_gradient", "DenseBincount", "model.py", 12)
    assert lines(snap(loss(w=RECEIVES)), snap(loss(w=RECEIVES), raises=(bincount,)))[-1] == (
        "DenseBincount (no_gradient) at model.py:12: appeared (the tape raises there)"
    )
