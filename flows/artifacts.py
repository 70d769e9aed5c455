"""What a study shows in the Prefect UI: progress, summary, aggregates table, dashboard link."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Mapping
from typing import cast
from uuid import UUID

import pyarrow as pa
from prefect.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from simstudy.analysis.ranking import LOSS_PREFIX, ranked
from simstudy.design.plan import Batch
from simstudy.display import Spread, format_number, format_parameters, split_parameters
from simstudy.output.location import OutputStore
from simstudy.output.results import AGGREGATES_FILE
from simstudy.run.batch import BatchResult
from simstudy.run.records import ReplicateRecord
from simstudy.run.tracking import TrackerSnapshot
from simstudy.spec.study import Study
from simstudy.stats.aggregate import ParameterSetAggregate, StudySummary

PROGRESS_EVERY_SECONDS = 5.0
"""Progress artifact updates at most this often: each is an API call (and server events)."""
MAX_TABLE_OUTPUTS = 6
"""Outputs shown in the aggregates table (two columns each); all are in aggregates.parquet."""
ERROR_CHARS = 1500
BEST_SETS = 10
"""Parameter sets of the ranking shown in the summary; all are in ranking.parquet."""


def artifact_key(study: Study, what: str) -> str:
    """Return an artifact key (lowercase letters, digits, dashes) for this study."""
    return re.sub(r"[^a-z0-9-]", "-", f"{study.name.lower()}-{what}")


class ProgressArtifact:
    """A progress artifact that moves as replicates finish (at most every 5 s, and at 100%)."""

    def __init__(self, study: Study):
        # Called from sync code, so Prefect's async_dispatch returns the id itself.
        self.artifact_id = cast(
            UUID,
            create_progress_artifact(
                progress=0.0,
                key=artifact_key(study, "progress"),
                description=f"Replicates finished in study {study.name}",
            ),
        )
        self._last_percent = 0.0
        self._last_time = 0.0

    def update(self, snapshot: TrackerSnapshot) -> None:
        """Move the artifact to the snapshot's share of finished replicates."""
        percent = 100.0 * snapshot.replicates_done / max(snapshot.total_replicates, 1)
        now = time.monotonic()
        finished = percent >= 100.0
        if percent == self._last_percent or (
            not finished and now - self._last_time < PROGRESS_EVERY_SECONDS
        ):
            return
        update_progress_artifact(self.artifact_id, progress=percent)
        self._last_percent, self._last_time = percent, now


def publish_dashboard_link(study: Study, dashboard: str | None) -> None:
    """Link the Dask dashboard, when the cluster has one."""
    if dashboard:
        create_link_artifact(
            link=dashboard,
            link_text="Dask dashboard",
            key=artifact_key(study, "dask-dashboard"),
            description="Live view of the Dask cluster running this study",
        )


def aggregates_table(aggregates: list[ParameterSetAggregate]) -> tuple[list[dict[str, str]], str]:
    """Return the rows (varied parameters, counts, mean and spread) and the description."""
    scalars = [row for a in aggregates for row in a.scalars]
    all_outputs = sorted({row["output"] for row in scalars})
    outputs = all_outputs[:MAX_TABLE_OUTPUTS]
    spread = Spread.for_rows(scalars)
    varied, fixed = split_parameters([a.params for a in aggregates])
    statuses = sorted({status for a in aggregates for status in a.counts})
    losses = any(a.loss is not None for a in aggregates)
    rows: list[dict[str, str]] = []
    for aggregate in ranked(aggregates) if losses else aggregates:
        by_output = {row["output"]: row for row in aggregate.scalars}
        row = {
            "param_id": aggregate.param_id[:12],
            **({"loss": format_number(aggregate.loss)} if losses else {}),
            **({"loss_se": format_number(aggregate.loss_se)} if losses else {}),
            **{name: format_number(aggregate.params.get(name)) for name in varied},
            "status": aggregate.status,
            **{f"n_{status}": str(aggregate.counts.get(status, 0)) for status in statuses},
        }
        for name in outputs:
            found = by_output.get(name)
            row[f"{name} mean"] = format_number(None if found is None else found["mean"])
            row[f"{name} {spread.label}"] = spread.format(found)
        rows.append(row)
    lines = ["One row per parameter set" + (", best (lowest loss) first." if losses else ".")]
    if fixed:
        lines.append(f"Fixed parameters: {format_parameters(fixed)}.")
    lines.append(f"Next to each mean: {spread.description}.")
    if len(all_outputs) > len(outputs):
        lines.append(
            f"First {len(outputs)} of {len(all_outputs)} outputs; all are in {AGGREGATES_FILE}."
        )
    return rows, "\n\n".join(lines)


def publish_aggregates_table(study: Study, aggregates: list[ParameterSetAggregate]) -> None:
    """Create the aggregates table artifact: one row per parameter set."""
    rows, description = aggregates_table(aggregates)
    create_table_artifact(
        table=rows,
        key=artifact_key(study, "aggregates"),
        description=f"Aggregates of study {study.name}. {description}",
    )


class FirstFailures:
    """The first failed replicate of each parameter set, kept as batches finish."""

    def __init__(self) -> None:
        self.records: dict[str, ReplicateRecord] = {}

    def add(self, finished: list[tuple[int, Batch, BatchResult]]) -> None:
        """Keep the first failed replicate of each set not seen failing before."""
        for _, _, result in finished:
            for record in result.records:
                if record.status != "ok" and record.param_id not in self.records:
                    self.records[record.param_id] = record


def summary_markdown(
    study: Study,
    summary: StudySummary,
    first_failure: Mapping[str, ReplicateRecord],
    store: OutputStore,
    wall_seconds: float,
    reused: int,
    headline: str,
    ranking: pa.Table | None = None,
    report: str | None = None,
) -> str:
    """Return the study's summary as Markdown (with the best sets and the report, if any)."""
    counts = summary.replicate_counts
    lines = [
        f"# Study {study.name}: {'completed' if summary.status == 'ok' else 'FAILED'}",
        "",
        headline,
        "",
        "| replicates | count |",
        "| --- | --- |",
        *[f"| {status} | {n} |" for status, n in sorted(counts.items())],
        f"| reused from an earlier run | {reused} |",
        "",
        f"Parameter sets aggregated: {summary.n_aggregated}/{summary.n_parameter_sets}. "
        f"Wall time: {wall_seconds:.1f} s. Output: `{store}`.",
    ]
    if report is not None:
        lines += ["", f"Report (plots, ranking, sensitivity): `{report}`"]
    if ranking is not None:
        lines += ["", *ranking_markdown(ranking)]
    if summary.failed_sets:
        lines += ["", "## Failed parameter sets", ""]
        for param_id, reasons in summary.failed_sets.items():
            lines += [f"### {param_id}", "", *[f"- {reason}" for reason in reasons]]
            failed = first_failure.get(param_id)
            if failed is not None and failed.error:
                lines += [
                    "",
                    f"First failed replicate: {failed.replicate} (seed {failed.seed}, "
                    f"{failed.status}, {failed.attempts} attempts, worker {failed.worker}):",
                    "",
                    "```",
                    failed.error[:ERROR_CHARS],
                    "```",
                ]
            lines.append("")
    lines += [
        "",
        "## Resume",
        "",
        "Finished replicates are kept in the output's `_parts/`: run the same study into the "
        "same output again (this deployment, or `simstudy run STUDY`) and only the missing "
        "or failed replicates run; `fresh` (`--fresh`) starts over.",
    ]
    return "\n".join(lines) + "\n"


def ranking_markdown(ranking: pa.Table, best: int = BEST_SETS) -> list[str]:
    """Return the ranking's best rows as a Markdown table (rank, loss, varied parameters)."""
    fixed = {"rank", "param_id", "index", "status", "loss", "loss_se"}
    varied = [
        name
        for name in ranking.column_names
        if name not in fixed and not name.startswith(LOSS_PREFIX)
    ]
    rows = ranking.slice(0, best).to_pylist()
    header = ["rank", "loss", "loss_se", "param_id", *varied]
    lines = [
        f"## Best {len(rows)} of {ranking.num_rows} parameter sets by loss",
        "",
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    for row in rows:
        cells = [
            format_number(row["rank"]),
            format_number(row["loss"]),
            format_number(row["loss_se"]),
            str(row["param_id"])[:12],
            *(format_number(row[name]) for name in varied),
        ]
        lines.append("| " + " | ".join(map(markdown_cell, cells)) + " |")
    return lines


def markdown_cell(text: str) -> str:
    """Return text safe in a Markdown table cell: parameters and names are the user's."""
    return html.escape(text).replace("|", "\\|").replace("`", "&#96;").replace("\n", " ")


def publish_summary(study: Study, markdown: str, headline: str) -> None:
    """Create the study's summary artifact."""
    create_markdown_artifact(
        markdown=markdown, key=artifact_key(study, "summary"), description=headline[:500]
    )


def publish_table(study: Study, what: str, rows: list[dict[str, str]], description: str) -> None:
    """Create (or update) the table artifact `what` of a study."""
    create_table_artifact(table=rows, key=artifact_key(study, what), description=description)


def publish_progress(artifact: UUID, percent: float) -> None:
    """Update a progress artifact."""
    update_progress_artifact(artifact, percent)
