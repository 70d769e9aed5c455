"""What a study shows in the Prefect UI: the aggregates table."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

from flows.artifacts import (
    MAX_TABLE_OUTPUTS,
    aggregates_table,
    artifact_key,
    publish_aggregates_table,
    ranking_markdown,
    summary_markdown,
)
from simstudy.output.location import OutputStore
from simstudy.spec.study import Study
from simstudy.stats.aggregate import StudySummary
from tests.support.aggregates import OUTPUTS, sample_aggregates, scalar_row

NUMBER = re.compile(r"-?[\d.]+(?:e[+-]\d+)?")


def significant_digits(text: str) -> int:
    """Return the most significant digits of any number in text (0.32116600000000006: 17)."""
    mantissas = (token.split("e")[0].lstrip("-").replace(".", "") for token in NUMBER.findall(text))
    return max((len(m.lstrip("0")) for m in mantissas), default=0)


def test_numbers_are_rounded_and_only_varied_parameters_have_columns() -> None:
    rows, description = aggregates_table(sample_aggregates())
    assert [list(row) for row in rows] == [list(rows[0])] * len(rows)  # same columns everywhere
    assert list(rows[0])[:5] == ["param_id", "beta", "status", "n_failed", "n_ok"]
    assert "gamma" not in rows[0] and "population" not in rows[0]
    assert "Fixed parameters: gamma=0.1, population=1000000." in description
    assert [row["beta"] for row in rows] == ["0.1", "0.2", "0.3", "0.4"]
    first = rows[0]
    assert first["attack_rate mean"] == "0.3212"
    assert first["peak_day mean"] == "177"
    assert first["peak_infected mean"] == "1.018e+05"
    assert first["peak_infected 5-95% of replicates"] == "[8.146e+04, 1.222e+05]"
    assert "5-95% band of the replicates" in description
    shown = [value for row in rows for column, value in row.items() if column != "param_id"]
    assert max(significant_digits(value) for value in shown) == 4


def test_a_failed_set_shows_its_counts_and_no_means() -> None:
    rows, _ = aggregates_table(sample_aggregates())
    failed = rows[-1]
    assert (failed["status"], failed["n_ok"], failed["n_failed"]) == ("failed", "2", "8")
    assert failed["attack_rate mean"] == "-"
    assert failed["attack_rate 5-95% of replicates"] == "-"
    assert rows[0]["n_failed"] == "0"


def test_without_the_quantiles_the_mean_gets_a_confidence_interval() -> None:
    rows, description = aggregates_table(sample_aggregates(quantiles=False))
    # std = 0.1 * mean, n_ok = 10: mean +- 1.96 * 0.1 * mean / sqrt(10)
    assert rows[0]["attack_rate 95% CI of mean"] == "[0.3013, 0.3411]"
    assert "95% confidence interval of the mean" in description
    assert not any("5-95%" in column for column in rows[0])


def test_a_single_parameter_set_has_only_fixed_parameters() -> None:
    aggregate = sample_aggregates(betas=1)[0]
    rows, description = aggregates_table([aggregate])
    assert "beta" not in rows[0]
    assert "Fixed parameters: beta=0.1, gamma=0.1, population=1000000." in description


def test_outputs_beyond_the_limit_are_named_in_the_description() -> None:
    aggregate = sample_aggregates(betas=1)[0]
    extra = [scalar_row(aggregate.param_id, f"z{i}", 1.0, True) for i in range(MAX_TABLE_OUTPUTS)]
    aggregate = aggregate.model_copy(update={"scalars": aggregate.scalars + extra})
    rows, description = aggregates_table([aggregate])
    assert sum(column.endswith(" mean") for column in rows[0]) == MAX_TABLE_OUTPUTS
    total = len(OUTPUTS) + MAX_TABLE_OUTPUTS
    assert f"First {MAX_TABLE_OUTPUTS} of {total} outputs" in description


def test_with_losses_the_table_is_sorted_best_first_and_shows_the_loss() -> None:
    aggregates = [
        a.model_copy(update={"loss": 1.0 / (a.index + 1), "loss_se": 0.01})
        if a.status == "ok"
        else a
        for a in sample_aggregates()
    ]
    rows, description = aggregates_table(aggregates)
    assert [row["beta"] for row in rows] == ["0.3", "0.2", "0.1", "0.4"]  # the failed set last
    assert rows[0]["loss"] == "0.3333" and rows[-1]["loss"] == "-"
    assert "best (lowest loss) first" in description
    assert "loss" not in aggregates_table(sample_aggregates())[0][0]


@pytest.mark.timeout(120)
def test_the_table_artifact_reaches_the_prefect_api(prefect_api_url: str) -> None:
    study = Study.model_validate(
        {"name": "seir_ui", "model": "tests.support.faulty:simulate",
         "parameters": {"grid": {"beta": [0.1, 0.2]}}, "replicates": 2, "seed": 1}
    )  # fmt: skip
    flow(name="publish-table")(publish_aggregates_table)(study, sample_aggregates())
    key = artifact_key(study, "aggregates")
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    assert found, f"no artifact {key}"
    assert "Fixed parameters: gamma=0.1" in (found[-1].description or "")
    assert "0.32116600000000006" not in str(found[-1].data)
    assert "0.3212" in str(found[-1].data)


def test_the_summary_shows_the_best_sets_escaped_and_where_the_report_is() -> None:
    ranking = pa.table(
        {
            "rank": pa.array([1, 2, None], pa.int64()),
            "param_id": ["a" * 64, "b" * 64, "c" * 64],
            "index": [2, 0, 1],
            "status": ["ok", "ok", "failed"],
            "loss": [1.5, 2.25, None],
            "loss_se": [0.1, 0.2, None],
            "loss_cases": [1.5, 2.25, None],
            "beta": [0.3, 0.1, 0.2],
            "place": ["x|<b>y</b>", "`z`", "w"],
        }
    )
    lines = ranking_markdown(ranking, best=2)
    assert lines[0] == "## Best 2 of 3 parameter sets by loss"
    assert lines[2] == "| rank | loss | loss_se | param_id | beta | place |"
    assert lines[4] == "| 1 | 1.5 | 0.1 | aaaaaaaaaaaa | 0.3 | x\\|&lt;b&gt;y&lt;/b&gt; |"
    assert lines[5] == "| 2 | 2.25 | 0.2 | bbbbbbbbbbbb | 0.1 | &#96;z&#96; |"
    assert len(lines) == 6  # the unranked set is in the file only
    study = Study.model_validate(
        {"name": "s", "model": "m:f", "parameters": {"grid": {"beta": [0.1]}}, "replicates": 1,
         "seed": 1}
    )  # fmt: skip
    summary = StudySummary(
        status="ok", replicate_counts={"ok": 3}, n_parameter_sets=3, n_aggregated=3
    )
    markdown = summary_markdown(
        study, summary, {}, OutputStore("/tmp/out"), wall_seconds=1.0, reused=0, headline="h",
        ranking=ranking, report="/tmp/out/report.html",
    )  # fmt: skip
    assert "Report (plots, ranking, sensitivity): `/tmp/out/report.html`" in markdown
    assert "## Best 3 of 3 parameter sets by loss" in markdown
