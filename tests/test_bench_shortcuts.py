"""bench/shortcuts.py: every case still runs both ways on the code it names (a renamed or
reshaped shortcut breaks it here, not on the day someone wants the figures), and its
verdict arithmetic is right."""

from __future__ import annotations

import gc

from bench import shortcut_cases, shortcut_io
from bench.shortcuts import Case, Outcome, Run, measure, run_loop


def test_every_case_runs_both_ways() -> None:
    thresholds = gc.get_threshold()
    with shortcut_io.cases() as io_cases:
        cases = [*shortcut_cases.cases(), *io_cases]
        for case in cases:
            assert case.plain(2) > 0, case.name
            assert case.shortcut(2) > 0, case.name
    assert len({case.name for case in cases}) == len(cases)
    assert gc.get_threshold() == thresholds
    assert not gc.get_freeze_count()


def _outcome(ratio: float, wins: int, rounds: int = 7) -> Outcome:
    case = Case("c", "nowhere", run_loop(lambda: None), run_loop(lambda: None))
    return Outcome(case, 1.0, 1.0 / ratio, ratio, wins, rounds)


def test_kept_only_with_a_gain_won_in_significantly_many_rounds() -> None:
    assert _outcome(2.0, 7).p_value == 1 / 128
    assert _outcome(2.0, 7).kept
    assert not _outcome(2.0, 5).kept  # p = 29/128
    assert not _outcome(1.03, 7).kept  # too small a gain to matter
    assert _outcome(1.0, 0).p_value == 1.0


def test_measure_alternates_and_takes_the_median_ratio() -> None:
    calls: list[str] = []

    def side(name: str) -> Run:
        def run(n: int) -> float:
            calls.append(name)
            return n * (2.0 if name == "plain" else 1.0)
        return run

    outcome = measure(Case("c", "nowhere", side("plain"), side("shortcut")), seconds=0.01, rounds=4)
    assert outcome.ratio == 2.0 and outcome.wins == 4
    rounds = calls[-8:]
    assert rounds == ["plain", "shortcut", "shortcut", "plain", "plain", "shortcut", "shortcut", "plain"]
