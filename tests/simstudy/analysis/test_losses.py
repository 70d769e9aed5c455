"""Every built-in loss against a hand computation; errors; loss_se; speed."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats

from simstudy.analysis.losses import (
    FLOOR,
    LossError,
    bootstrap_counts,
    estimated_dispersion,
    point_losses,
    set_loss,
)
from simstudy.analysis.targets import OutputTarget, Targets
from simstudy.design.expand import ParameterSet
from simstudy.run.batch import BatchResult
from simstudy.stats.aggregate import aggregate_parameter_set
from simstudy.stats.partial import EXACT_REPLICATES, Partial

# Three replicates of a 3-point series: mean (2, 4, 6), sample variance (1, 4, 9).
SERIES = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 6.0, 9.0]])
OBSERVED = np.array([2.0, 5.0, 4.0])


def target(loss: str, value=OBSERVED, t=(0, 1, 2), weight=None, denominator=None) -> OutputTarget:
    value = np.asarray(value, dtype=float)
    return OutputTarget(
        output="cases",
        loss=loss,
        t=None if t is None else np.array(t),
        value=value,
        weight=np.ones(len(value)) if weight is None else np.asarray(weight, dtype=float),
        denominator=None if denominator is None else np.asarray(denominator, dtype=float),
    )


def targets_of(*outputs: OutputTarget, bootstrap: int = 0, dispersion=None) -> Targets:
    return Targets(outputs, dispersion, bootstrap, 7, "observed.csv")


def loss_of(loss: str, values=SERIES, **kwargs) -> float:
    found = set_loss(
        {"cases": Partial.from_values(values)},
        {"cases": "series"},
        targets_of(target(loss, **{k: v for k, v in kwargs.items() if k != "dispersion"}),
                   dispersion=kwargs.get("dispersion")),
        "set",
    )  # fmt: skip
    return found.loss


def test_mse_of_mean_is_the_weighted_sum_of_squared_errors_of_the_mean() -> None:
    # (2-2)^2 + (4-5)^2 + (6-4)^2 = 0 + 1 + 4, weighted 1, 2, 0.5.
    assert loss_of("mse_of_mean") == pytest.approx(5.0)
    assert loss_of("mse_of_mean", weight=[1.0, 2.0, 0.5]) == pytest.approx(0 + 2 + 2)


def test_mean_of_mse_averages_each_replicates_squared_error() -> None:
    by_hand = np.mean(np.sum((SERIES - OBSERVED) ** 2, axis=1))
    assert loss_of("mean_of_mse") == pytest.approx(by_hand)


def test_gaussian_nll_uses_the_replicate_mean_and_sample_std() -> None:
    sd = SERIES.std(axis=0, ddof=1)
    by_hand = -stats.norm.logpdf(OBSERVED, SERIES.mean(axis=0), sd).sum()
    assert loss_of("gaussian_nll") == pytest.approx(by_hand)


def test_poisson_is_the_negative_log_likelihood_at_the_replicate_mean() -> None:
    by_hand = -stats.poisson.logpmf(OBSERVED, SERIES.mean(axis=0)).sum()
    assert loss_of("poisson") == pytest.approx(by_hand)


def test_poisson_floors_a_zero_rate_so_the_loss_stays_finite() -> None:
    zeros = np.zeros((2, 3))
    assert loss_of("poisson", values=zeros) == pytest.approx(
        -stats.poisson.logpmf(OBSERVED, FLOOR).sum()
    )


def test_negative_binomial_with_given_and_estimated_dispersion() -> None:
    mean, variance = SERIES.mean(axis=0), SERIES.var(axis=0, ddof=1)
    k = 3.0
    given = -stats.nbinom.logpmf(OBSERVED, k, k / (k + mean)).sum()
    assert loss_of("negative_binomial", dispersion=k) == pytest.approx(given)
    pooled = float(np.sum(mean**2) / np.sum(variance - mean))  # 56 / 2
    assert float(estimated_dispersion(mean, variance)[0]) == pytest.approx(28.0)
    estimated = -stats.nbinom.logpmf(OBSERVED, pooled, pooled / (pooled + mean)).sum()
    assert loss_of("negative_binomial") == pytest.approx(estimated)


def test_negative_binomial_without_overdispersion_is_poisson() -> None:
    flat = np.array([[2.0, 4.0, 6.0], [2.0, 4.0, 6.0]])  # variance 0 < mean
    assert loss_of("negative_binomial", values=flat) == pytest.approx(
        -stats.poisson.logpmf(OBSERVED, flat[0]).sum()
    )


def test_binomial_uses_the_mean_over_the_denominator() -> None:
    trials = np.array([10.0, 10.0, 20.0])
    by_hand = -stats.binom.logpmf(OBSERVED, trials, SERIES.mean(axis=0) / trials).sum()
    assert loss_of("binomial", denominator=trials) == pytest.approx(by_hand)


def test_point_losses_vectorise_over_resamples() -> None:
    means = np.array([[2.0, 4.0, 6.0], [3.0, 3.0, 3.0]])
    found = point_losses(
        "poisson", target("poisson"), means, np.ones((2, 3)), np.full(3, 3.0), None
    )
    assert found.shape == (2, 3)
    assert found[1] == pytest.approx(-stats.poisson.logpmf(OBSERVED, 3.0))


def test_several_outputs_sum_and_are_reported_each() -> None:
    scalar = OutputTarget("size", "mse_of_mean", None, np.array([10.0]), np.array([3.0]), None)
    found = set_loss(
        {
            "cases": Partial.from_values(SERIES),
            "size": Partial.from_values(np.array([[8.0], [9.0]])),
        },
        {"cases": "series", "size": "scalar"},
        targets_of(target("mse_of_mean"), scalar),
        "set",
    )
    assert found.target_losses == pytest.approx({"cases": 5.0, "size": 3 * 1.5**2})
    assert found.loss == pytest.approx(5.0 + 6.75)


def user_loss(summary: dict, observed: dict) -> float:
    """A user loss: absolute error of the median replicate."""
    return float(np.sum(np.abs(np.median(summary["values"], axis=0) - observed["value"])))


def test_user_loss_gets_the_summary_and_the_observed_values() -> None:
    assert loss_of(f"{__name__}:user_loss") == pytest.approx(0 + 1 + 2)


def test_missing_output_and_short_series_fail_with_the_reason() -> None:
    partials = {"other": Partial.from_values(SERIES)}
    with pytest.raises(
        LossError, match=r"output 'cases' is not among the model's outputs \('other'\)"
    ):
        set_loss(partials, {"other": "series"}, targets_of(target("poisson")), "set")
    far = target("poisson", value=[1.0], t=[7])
    with pytest.raises(LossError, match="has 3 points .* observes t = 7"):
        set_loss({"cases": Partial.from_values(SERIES)}, {"cases": "series"}, targets_of(far), "s")
    scalar = target("poisson", value=[1.0], t=None)
    with pytest.raises(LossError, match="is a series, but its target .* has no t"):
        set_loss(
            {"cases": Partial.from_values(SERIES)}, {"cases": "series"}, targets_of(scalar), "s"
        )


def test_a_point_without_any_value_fails_instead_of_nan() -> None:
    values = SERIES.copy()
    values[:, 1] = np.nan
    with pytest.raises(LossError, match="no value in any replicate at t = 1"):
        loss_of("mse_of_mean", values=values)


def test_bootstrap_se_is_deterministic_and_close_to_the_formula() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(10.0, 2.0, size=(400, 1))
    scalar = OutputTarget("x", "mse_of_mean", None, np.array([0.0]), np.ones(1), None)
    partials = {"x": Partial.from_values(values)}
    first = set_loss(partials, {"x": "scalar"}, targets_of(scalar, bootstrap=200), "a")
    again = set_loss(partials, {"x": "scalar"}, targets_of(scalar, bootstrap=200), "a")
    other = set_loss(partials, {"x": "scalar"}, targets_of(scalar, bootstrap=200), "b")
    assert first.loss_se == again.loss_se != other.loss_se
    # Delta method: d(m^2)/dm * sd / sqrt(n) = 2 m sd / sqrt(n).
    mean, sd = values.mean(), values.std(ddof=1)
    assert first.loss_se == pytest.approx(2 * mean * sd / math.sqrt(400), rel=0.2)


def test_beyond_exact_replicates_the_delta_method_gives_loss_se() -> None:
    rng = np.random.default_rng(4)
    values = rng.normal(10.0, 2.0, size=(EXACT_REPLICATES + 1, 1))
    partial = Partial.from_values(values)
    assert partial.exact is None
    scalar = OutputTarget("x", "mse_of_mean", None, np.array([0.0]), np.ones(1), None)
    found = set_loss({"x": partial}, {"x": "scalar"}, targets_of(scalar, bootstrap=200), "a")
    expected = 2 * values.mean() * values.std(ddof=1) / math.sqrt(len(values))
    assert found.loss_se == pytest.approx(expected, rel=1e-3)


def test_one_replicate_has_no_loss_se() -> None:
    found = set_loss(
        {"cases": Partial.from_values(SERIES[:1])},
        {"cases": "series"},
        targets_of(target("mse_of_mean"), bootstrap=200),
        "set",
    )
    assert found.loss_se is None


def test_bootstrap_counts_draw_each_resample_of_all_replicates() -> None:
    counts = bootstrap_counts(5, 50, 1, "set")
    assert counts.shape == (50, 5)
    assert (counts.sum(axis=1) == 5).all()


def batch_of(values: np.ndarray, start: int = 0) -> BatchResult:
    return BatchResult(
        param_id="p",
        start=start,
        stop=start + len(values),
        records=[],
        kinds={"cases": "series"},
        partials={"cases": Partial.from_values(values)},
        counts={"ok": len(values)},
    )


def test_aggregation_carries_the_loss_and_a_failing_target_fails_the_set() -> None:
    parameter_set = ParameterSet(param_id="p", index=0, params={"beta": 0.2})
    batches = [batch_of(SERIES[:2]), batch_of(SERIES[2:], start=2)]
    aggregate = aggregate_parameter_set(
        parameter_set, batches, 3, 1.0, [], targets_of(target("mse_of_mean"), bootstrap=50)
    )
    assert aggregate.status == "ok"
    assert aggregate.loss == pytest.approx(5.0)
    assert aggregate.target_losses == pytest.approx({"cases": 5.0})
    assert aggregate.loss_se is not None and aggregate.loss_se > 0
    far = targets_of(target("mse_of_mean", value=[1.0], t=[3]))
    failed = aggregate_parameter_set(parameter_set, batches, 3, 1.0, [], far)
    assert failed.status == "failed" and failed.loss is None
    assert "observes t = 3" in failed.reasons[0]


@pytest.mark.timeout(120)
def test_a_thousand_sets_of_four_replicates_with_a_365_point_target_take_seconds() -> None:
    rng = np.random.default_rng(0)
    observed = rng.poisson(50, 365).astype(float)
    targets = targets_of(target("poisson", value=observed, t=range(365)), bootstrap=200)
    partials = [
        {"cases": Partial.from_values(rng.poisson(50, (4, 365)).astype(float))} for _ in range(1000)
    ]
    started = time.perf_counter()
    for index, partial in enumerate(partials):
        set_loss(partial, {"cases": "series"}, targets, str(index))
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, f"{elapsed:.1f} s for 1,000 sets"


@pytest.mark.parametrize(
    "loss", ["mse_of_mean", "mean_of_mse", "gaussian_nll", "poisson", "negative_binomial"]
)
def test_every_builtin_loss_gets_a_bootstrap_se(loss: str) -> None:
    rng = np.random.default_rng(5)
    values = rng.poisson([[3.0, 6.0, 9.0]] * 30).astype(float) * rng.gamma(2.0, 0.5, (30, 1))
    values = np.round(values)
    targets = targets_of(target(loss), bootstrap=100)
    found = set_loss({"cases": Partial.from_values(values)}, {"cases": "series"}, targets, "s")
    assert found.loss_se is not None and 0 < found.loss_se < found.loss


def test_a_user_loss_is_bootstrapped_on_resampled_values() -> None:
    targets = targets_of(target(f"{__name__}:user_loss"), bootstrap=50)
    partials = {"cases": Partial.from_values(SERIES)}
    found = set_loss(partials, {"cases": "series"}, targets, "s")
    again = set_loss(partials, {"cases": "series"}, targets, "s")
    assert found.loss == pytest.approx(3.0)
    assert found.loss_se is not None and found.loss_se == again.loss_se > 0


def failing_loss(summary: dict, observed: dict) -> float:
    """A user loss that fails."""
    raise RuntimeError("no fit today")


def test_a_failing_user_loss_names_itself_and_its_error() -> None:
    with pytest.raises(
        LossError,
        match=r"test_losses:failing_loss of output 'cases' raised RuntimeError: no fit today",
    ):
        loss_of(f"{__name__}:failing_loss")


@pytest.mark.parametrize(
    ("function", "error"),
    [("exiting", "SystemExit: 3"), ("interrupting", "KeyboardInterrupt: ")],
)
def test_a_user_loss_that_exits_or_interrupts_is_a_loss_error_naming_it(
    function: str, error: str
) -> None:
    # Escaping into a Dask worker, either ended the worker three times ("KilledWorker").
    with pytest.raises(LossError, match=f"losses:{function} of output 'cases' raised {error}"):
        loss_of(f"tests.support.losses:{function}")


def test_a_user_loss_returning_nan_is_blamed_not_the_replicates() -> None:
    with pytest.raises(LossError, match="is nan \\(returned by tests.support.losses:not_a_number"):
        loss_of("tests.support.losses:not_a_number")


@pytest.mark.parametrize("loss", ["poisson", "mse_of_mean", "binomial", "mean_of_mse"])
def test_a_loss_minus_its_replicate_bias_does_not_drift_with_the_replicates(loss: str) -> None:
    # The same truth at 2 and at 32 replicates: the raw loss of a mean falls with more
    # replicates, the score (loss - loss_bias) keeps its expectation.
    rng = np.random.default_rng(7)
    rate = np.linspace(5.0, 40.0, 25)
    points = np.arange(25)
    observed = rng.poisson(rate).astype(float)
    denominator = np.full(25, 100.0) if loss == "binomial" else None
    output = OutputTarget("cases", loss, points, observed, np.ones(25), denominator)
    targets = Targets((output,), None, 0, 1, "observed.csv")

    def mean_losses(replicates: int) -> tuple[float, float]:
        raw, score = [], []
        for _ in range(600):
            values = rng.poisson(rate, size=(replicates, 25)).astype(float)
            found = set_loss({"cases": Partial.from_values(values)}, {"cases": "series"},
                             targets, "id")  # fmt: skip
            assert found.loss_bias is not None
            raw.append(found.loss)
            score.append(found.loss - found.loss_bias)
        return float(np.mean(raw)), float(np.mean(score))

    (raw_few, score_few), (raw_many, score_many) = mean_losses(2), mean_losses(32)
    spread = abs(raw_many) * 0.02 + 1.0
    assert abs(score_few - score_many) < spread
    if loss == "mean_of_mse":
        assert raw_few == score_few  # its expectation does not depend on the replicates
    else:
        assert raw_few - raw_many > spread, (raw_few, raw_many, "the raw loss falls with more")


def test_the_replicate_bias_is_unknown_for_a_loss_of_the_spread() -> None:
    values = np.array([[1.0, 2.0, 3.0], [2.0, 3.0, 5.0]])
    targets = Targets((target("gaussian_nll"),), None, 0, 1, "observed.csv")
    found = set_loss({"cases": Partial.from_values(values)}, {"cases": "series"}, targets, "id")
    assert found.loss_bias is None
