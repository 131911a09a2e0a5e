"""The statistics of a judge calibration against the original judge's published scores, checked by hand."""

import pytest

from sftlab.evaluation.calibration import calibration_summary, item_agreement, rank_agreement, score_mapping


def rows(table):
    return [{"model": m, "item": i, "original": o, "ours": u} for m, i, o, u in table]


def test_ratings_agreement_ranking_and_mapping():
    # ours = 2 · original − 3 on every item: same ranking, a line original = 1.5 + 0.5 · ours
    table = [("a", 1, 4, 5), ("a", 2, 6, 9), ("b", 1, 7, 11), ("b", 2, 8, 13), ("c", 1, 3, 3), ("c", 2, 3, 3),
             ("c", 3, None, 4)]
    summary = calibration_summary(rows(table), "rating")
    assert summary["rank"] == {"models": 3, "spearman": pytest.approx(1.0), "kendall": pytest.approx(1.0)}
    # |o − u| over the 6 scored items: 1, 3, 4, 5, 0, 0 → exact 2/6, within one 3/6; one row unscored
    assert summary["per_item"] == {"items": 6, "unscored": 1, "exact": pytest.approx(2 / 6),
                                   "within_one": pytest.approx(3 / 6)}
    items = summary["mapping"]["items"]
    assert (items["intercept"], items["slope"], items["r"]) == pytest.approx((1.5, 0.5, 1.0))
    # model means (original, ours): a (5, 7), b (7.5, 12), c (3, 3): on the same line
    models = summary["mapping"]["models"]
    assert (models["intercept"], models["slope"], models["n"]) == (pytest.approx(1.5), pytest.approx(0.5), 3)


def test_a_judge_that_swaps_two_models():
    # means original a 1, b 2, c 3; ours a 2, b 1, c 3: ρ = 1 − 6·(1 + 1 + 0)/(3·8) = 0.5, τ = (2 − 1)/3
    table = [("a", 1, 1, 2), ("b", 1, 2, 1), ("c", 1, 3, 3)]
    assert rank_agreement(rows(table)) == {"models": 3, "spearman": pytest.approx(0.5), "kendall": pytest.approx(1 / 3)}
    assert rank_agreement(rows(table[:1]))["spearman"] is None


def test_preferences_agree_on_the_winner():
    # winners original: reference, model, tie, model; ours: reference, reference, tie, model → 3 of 4
    table = [("m", 1, 1.2, 1.1), ("m", 2, 1.8, 1.3), ("m", 3, 1.5, 1.5), ("m", 4, 1.9, 1.7)]
    assert item_agreement(rows(table), "preference") == {"items": 4, "unscored": 0, "same_winner": 0.75}
    with pytest.raises(ValueError, match="ratings or preferences"):
        item_agreement(rows(table), "ranks")
    # one model only: no line over model means
    assert score_mapping(rows(table))["models"]["slope"] is None
