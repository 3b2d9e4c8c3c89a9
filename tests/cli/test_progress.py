"""The progress helper of the long commands (replay/cli/progress.py) on a stderr that is
not a terminal, on a fake clock: a line per task once per interval, the demo's tenths,
a total that grows with what arrived, nothing when quiet, nothing on stdout."""

from __future__ import annotations

import pytest

from facta.replay.cli.progress import ProgressDisplay


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_per_interval_with_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    with ProgressDisplay(interval_s=5.0, terminal=False, clock=clock) as display:
        task = display.task("relay 'default'", "events", 1000)
        for at, done in ((1.0, 100), (4.9, 200)):  # within the first interval: nothing yet
            clock.now = 100.0 + at
            task(done)
        assert capsys.readouterr().err == ""
        clock.now = 105.0
        task(250)  # 250 in 5 s: 50 events/s, 750 left: 15 s
        clock.now = 107.0
        task(300)  # 2 s after the last line: nothing
        clock.now = 110.0
        task(1200)  # more than the total arrived: the total follows
        task.finish(line=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "relay 'default': 250/1000 events (25%), 50 events/s, ETA 15.0 s",
        "relay 'default': 1200/1200 events (100%), 120 events/s, ETA under 0.1 s",
        "relay 'default': 1200/1200 events (100%), 120 events/s, done",
    ]


def test_steps_an_unknown_total_and_quiet(capsys: pytest.CaptureFixture[str]) -> None:
    clock = Clock()
    with ProgressDisplay(interval_s=3600.0, terminal=False, clock=clock) as display:
        rides = display.task("  rides", "rides", 20, steps=10)
        unknown = display.task("replay x", "events")
        for done in range(1, 21):
            clock.now += 0.5
            rides(done)
        unknown(7)
    assert [line.split(" rides (")[0] for line in capsys.readouterr().err.splitlines()] == [
        f"  rides: {n}/20" for n in range(2, 21, 2)]
    clock.now += 3600.0
    unknown(9)
    assert capsys.readouterr().err == "replay x: 9 events, 0 events/s\n"  # no share nor ETA without a total
    with ProgressDisplay(quiet=True, interval_s=0.001, terminal=False, clock=clock) as display:
        task = display.task("  rides", "rides", 5, steps=5)
        clock.now += 1
        task(5)
        task.finish(line=True)
    assert capsys.readouterr() == ("", "")
