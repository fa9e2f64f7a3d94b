"""Population statistics against hand-computed values and numpy."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cd7flow.outputs import write_csv
from gating import ArraySource, Dimension
from gating.gates import RectangleGate
from gating.stats import channel_statistics, cv, geometric_mean, population_table, robust_cv
from gating.tree import GatingTree


def test_hand_computed_small_case():
    s = channel_statistics(np.array([1.0, 2.0, 3.0, 4.0]), percentiles=(25, 50))
    assert s["median"] == 2.5 and s["mean"] == 2.5
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3))
    assert s["cv"] == pytest.approx(100 * math.sqrt(5 / 3) / 2.5)
    assert s["geometric_mean"] == pytest.approx(24 ** 0.25)
    assert s["p25"] == 1.75 and s["p50"] == 2.5  # linear interpolation: 1 + 0.75 * (2 - 1)


def test_geometric_mean_uses_positive_values_only():
    assert geometric_mean(np.array([-5.0, 0.0, 1.0, 4.0])) == pytest.approx(2.0)
    assert math.isnan(geometric_mean(np.array([-1.0, 0.0])))


def test_robust_cv_hand_computed_and_normal_limit():
    # 0..100: P15.87 = 15.87, P84.13 = 84.13, median 50 -> 100 * 0.5 * 68.26 / 50
    assert robust_cv(np.arange(101.0)) == pytest.approx(68.26)
    rng = np.random.default_rng(0)
    x = rng.normal(1000, 100, 400_000)
    assert robust_cv(x) == pytest.approx(cv(x), rel=0.01)
    assert cv(x) == pytest.approx(10.0, rel=0.01)


def test_nan_values_are_ignored_and_empty_gives_nan():
    s = channel_statistics(np.array([np.nan, 2.0, 4.0]))
    assert s["mean"] == 3.0 and s["median"] == 3.0
    e = channel_statistics(np.array([]), percentiles=(5,))
    assert all(math.isnan(v) for v in e.values()) and "p5" in e


def test_matches_numpy_on_random_data():
    rng = np.random.default_rng(2)
    x = rng.lognormal(5, 1, 10_001)
    s = channel_statistics(x, percentiles=(1, 99))
    assert s["median"] == np.median(x)
    assert s["p99"] == np.percentile(x, 99)
    assert s["geometric_mean"] == pytest.approx(np.exp(np.log(x).mean()), rel=1e-12)


@pytest.fixture
def result():
    x = np.arange(10, dtype=float)  # 0..9
    y = np.array([5.0, 1, 2, 3, 4, 5, 6, 7, 8, 100])
    t = GatingTree()
    t.add(RectangleGate("A", ["x"], [2], [None]))  # x >= 2: 8 events
    t.add(RectangleGate("B", ["y"], [None], [7]), parent="A")  # y < 7 among those: x=2..6 -> 5
    return t.apply(ArraySource(np.column_stack([x, y]), ["x", "y"]))


def test_population_table_tidy_rows(result, tmp_path):
    df = population_table(result, ["y"], sample="s1.fcs", percentiles=(50,))
    assert list(df.columns) == ["sample", "population", "statistic", "channel", "value"]

    def val(pop, stat, ch=""):
        row = df[(df.population == pop) & (df.statistic == stat) & (df.channel == ch)]
        assert len(row) == 1
        return row.value.iloc[0]

    assert val("/", "count") == 10
    assert val("/A", "count") == 8 and val("/A", "percent_of_total") == 80.0
    assert val("/A/B", "count") == 5
    assert val("/A/B", "percent_of_parent") == pytest.approx(62.5)
    assert val("/A/B", "percent_of_total") == pytest.approx(50.0)
    assert val("/A/B", "mean", "y") == 4.0  # y of x=2..6 is 2..6
    assert val("/A/B", "p50", "y") == 4.0
    assert set(df["sample"]) == {"s1.fcs"}
    out = tmp_path / "stats.csv"
    write_csv(df, out)
    back = pd.read_csv(out, keep_default_na=False)
    assert len(back) == len(df)
    assert back.loc[back.statistic == "count", "value"].astype(float).tolist() == [10.0, 8.0, 5.0]


def test_transformed_dimension_label(result):
    src = ArraySource(result.source.events, ["x", "y"], transforms={"double": lambda v: 2 * v})
    r = result.tree.apply(src)
    df = population_table(r, [Dimension("y", None, "double")], populations=["B"], include_root=False)
    assert set(df.population) == {"/A/B"}
    assert df[(df.statistic == "median")].value.iloc[0] == 8.0
    assert df[(df.statistic == "median")].channel.iloc[0] == "[y, xform=double]"
