"""The tuning protocol (issue 28): the same grid for every method and baseline, and its rule."""
import pandas as pd
import pytest

from fglib.book.tables import tuned_gaps, tuning_table
from fglib.experiments import regimes


def test_every_subject_gets_the_same_trials_and_trial_0_is_its_untuned_config():
    grid = regimes.tuning_grid()
    subjects = regimes.tuning_subjects()
    trials = regimes.tuning_trials()
    assert len(trials) == len(regimes.TUNING_LR_SCALES) * len(regimes.TUNING_WEIGHT_DECAYS) \
        * len(regimes.TUNING_SMOOTHING)
    assert len(grid) == len(subjects) * len(trials)
    assert len({c.key() for _, _, c in grid}) == len(grid)          # no two trials alike
    for name, cfg in subjects.items():
        mine = {i: c for n, i, c in grid if n == name}
        assert sorted(mine) == list(range(len(trials)))
        assert mine[0].key() == cfg.key()                           # the default comes first
        assert cfg.data.synth["seed"] == regimes.TUNING["seed"]     # tuned on the tuning benchmark
        assert cfg.model.pretrained                                 # in the paper regime
        for i, c in mine.items():
            t = trials[i]
            assert c.train.lr == pytest.approx(cfg.train.lr * t["lr_scale"])
            assert c.train.weight_decay == t["train.weight_decay"]
            assert c.train.label_smoothing == t["train.label_smoothing"]
            same = cfg.override(**{"train.lr": c.train.lr, "train.weight_decay": c.train.weight_decay,
                                   "train.label_smoothing": c.train.label_smoothing})
            assert same.key() == c.key()                            # nothing else changes


def test_each_method_is_tuned_beside_the_baseline_on_its_batches():
    subjects = regimes.tuning_subjects()
    for m in regimes.COMPARED:
        method, base = subjects[m], subjects[regimes.baseline_subject(m)]
        assert base.model.method == "baseline" and method.model.method == m
        for field in ("sampler", "classes_per_batch", "images_per_class", "lr", "epochs"):
            assert getattr(method.train, field) == getattr(base.train, field), (m, field)


def test_the_rule_takes_the_best_trial_and_the_earlier_one_on_a_tie():
    assert regimes.chosen_trial({0: 50.0, 1: 52.5, 2: 52.5, 3: 40.0}) == 1
    assert regimes.chosen_trial({0: 50.0, 1: 49.9}) == 0
    assert regimes.chosen_trial({3: 10.0, 2: 10.0}) == 2


def _runs(top1):
    return pd.DataFrame([{"subject": s, "trial": t, "top1": v}
                         for s, row in top1.items() for t, v in enumerate(row)])


def test_tuning_table_and_gaps_by_hand():
    n = len(regimes.tuning_trials())
    flat = [50.0] * n
    top1 = {name: list(flat) for name in regimes.tuning_subjects()}
    top1["baseline, random batches"][3] = 53.0           # tuning helps the baseline by 3
    top1["rra"][0] = 52.0                                 # RRA: +2 untuned, its best is the default
    top1["rra"][5] = 52.0                                 # a tie: the earlier trial (0) is chosen
    t = tuning_table(_runs(top1))
    b = t.loc["baseline, random batches"]
    assert (b["untuned top-1 (%)"], b["tuned top-1 (%)"], b["gain"], b["chosen trial"]) == (50, 53, 3, 3)
    trial = regimes.tuning_trials()[3]
    assert (b["lr x"], b["weight decay"], b["label smoothing"]) == (
        trial["lr_scale"], trial["train.weight_decay"], trial["train.label_smoothing"])
    assert t.loc["rra", "chosen trial"] == 0 and t.loc["rra", "gain"] == 0
    gaps = tuned_gaps(t)
    assert gaps.loc["rra", "untuned gap"] == 2.0 and gaps.loc["rra", "tuned gap"] == -1.0
    assert gaps.loc["cin", "untuned gap"] == 0.0 and gaps.loc["cin", "tuned gap"] == 0.0


def test_a_subject_short_of_trials_is_refused():
    n = len(regimes.tuning_trials())
    top1 = {name: [50.0] * n for name in regimes.tuning_subjects()}
    runs = _runs(top1)
    runs = runs[~((runs.subject == "cin") & (runs.trial == n - 1))]
    with pytest.raises(ValueError, match="cin: trials"):
        tuning_table(runs)


def test_tuning_sentences_say_what_the_tables_say():
    from fglib.book.tables import tuning_sentences
    n = len(regimes.tuning_trials())
    top1 = {name: [50.0] * n for name in regimes.tuning_subjects()}
    top1["baseline, random batches"][1] = 53.0           # trial 1: label smoothing 0.1
    top1["rra"][0] = 52.0
    t = tuning_table(_runs(top1))
    names = {m: m.upper() for m in regimes.COMPARED}
    text = tuning_sentences(t, tuned_gaps(t), names)
    assert text.startswith(f"Tuning chose a setting other than the default for 1 of the {len(t)} ")
    assert "raised the baselines by +3.0, +0.0, +0.0 points" in text
    assert ("Label smoothing was chosen for baseline, random batches; the weight decay of 5e-05 "
            "for 0, the learning rate x 0.5 for 0 of the 8.") in text
    assert "+2.0 to -1.0 (RRA)" in text and "the sign flips for RRA" in text


def test_paired_change_by_hand():
    from fglib.book.tables import paired_change
    before = pd.DataFrame({"method": ["cin"] * 3, "kind": ["baseline"] * 3, "seed": [0, 1, 2],
                           "top1": [70.0, 72.0, 74.0]})
    after = pd.DataFrame({"method": ["cin"] * 4, "kind": ["baseline"] * 4, "seed": [2, 1, 0, 9],
                          "top1": [75.0, 74.0, 71.0, 0.0]})     # seed 9 has no partner
    t = paired_change(before, after, "baseline", {"cin": "CIN"})
    row = t.loc["CIN"]
    assert row["seeds"] == 3 and row["paired Δ"] == pytest.approx(4 / 3)   # +1, +2, +1
    half = 4.302652729749464 * pd.Series([1.0, 2.0, 1.0]).std() / 3 ** 0.5    # t_.975,2 se
    assert row["95 % CI"] == f"[{4 / 3 - half:+.1f}, {4 / 3 + half:+.1f}]"
    assert row["verdict"] == "inconclusive"                   # three seeds cannot decide
    assert row["untuned top-1 (%)"] == 72.0 and row["tuned top-1 (%)"] == pytest.approx(220 / 3)
    with pytest.raises(ValueError, match="seeds in both"):
        paired_change(before, after.assign(seed=[5, 6, 7, 8]), "baseline", {"cin": "CIN"})


def test_the_recorded_choices_are_checked_against_the_rule(monkeypatch):
    from fglib.book.tables import check_tuned
    n = len(regimes.tuning_trials())
    top1 = {name: [50.0] * n for name in regimes.tuning_subjects()}
    for name, trial in regimes.TUNED.items():
        top1[name][trial] = 60.0
    t = tuning_table(_runs(top1))
    assert check_tuned(t) == f"regimes.TUNED holds the rule's choice for all {len(t)} subjects."
    monkeypatch.setitem(regimes.TUNED, "cin", (regimes.TUNED["cin"] + 1) % n)
    with pytest.raises(ValueError, match="'cin'"):
        check_tuned(t)


def test_every_subject_has_a_recorded_choice_and_tuned_configs_use_it():
    assert set(regimes.TUNED) == set(regimes.tuning_subjects())
    trials = regimes.tuning_trials()
    for m in regimes.COMPARED:
        for baseline in (False, True):
            subject = regimes.baseline_subject(m) if baseline else m
            want = regimes.with_trial(regimes.compare_config(m, "paper", 3, baseline=baseline),
                                      trials[regimes.TUNED[subject]])
            assert regimes.tuned_config(m, 3, baseline=baseline).key() == want.key()
