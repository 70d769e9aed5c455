"""`simstudy report` and `show` on tampered output folders: an error naming the file, never a
traceback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from flows.cli import main
from simstudy.calibrate.folder import CALIBRATION_FILE, TRIALS_FILE
from simstudy.output.location import OutputStore
from tests.simstudy.report.folders import write_folder


def edit_study(change: Callable[[dict[str, Any]], object]) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        document = json.loads((folder / "study.json").read_text())
        change(document)
        (folder / "study.json").write_text(json.dumps(document))

    return tamper


def replace_table(name: str, table: pa.Table) -> Callable[[Path], None]:
    return lambda folder: pq.write_table(table, folder / name)


def as_text(name: str, column: str) -> Callable[[Path], None]:
    def tamper(folder: Path) -> None:
        table = pq.read_table(folder / name)
        index = table.schema.get_field_index(column)
        pq.write_table(table.set_column(index, column, table.column(column).cast(pa.string())),
                       folder / name)  # fmt: skip

    return tamper


def plots_as_a_file(folder: Path) -> None:
    shutil.rmtree(folder / "plots", ignore_errors=True)
    (folder / "plots").write_text("x")


def report_as_a_folder(folder: Path) -> None:
    (folder / "report.html").unlink(missing_ok=True)
    (folder / "report.html").mkdir()


# name -> (tamper, the file an error must name)
TAMPERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage replicates": (lambda f: (f / "replicates.parquet").write_bytes(b"x" * 700),
                           "replicates.parquet"),
    "garbage aggregates": (lambda f: (f / "aggregates.parquet").write_bytes(b"PAR1xPAR1"),
                           "aggregates.parquet"),
    "string counts": (edit_study(lambda d: d.update(replicate_counts="many")), "study.json"),
    "list params": (edit_study(lambda d: [s.update(params=[1]) for s in d["parameter_sets"]]),
                    "study.json"),
    "null params": (edit_study(lambda d: [s.update(params=None) for s in d["parameter_sets"]]),
                    "study.json"),
    "sets as a mapping": (edit_study(lambda d: d.update(parameter_sets={"a": 1})), "study.json"),
    "study.json a list": (lambda f: (f / "study.json").write_text("[1, 2]"), "study.json"),
    "study.json null": (lambda f: (f / "study.json").write_text("null"), "study.json"),
    "study.json not json": (lambda f: (f / "study.json").write_text("{"), "study.json"),
    "study a list": (edit_study(lambda d: d.update(study=[1])), "study.json"),
    "failed sets a list": (edit_study(lambda d: d.update(failed_parameter_sets=[1])),
                           "study.json"),
    "aggregates of another schema": (replace_table("aggregates.parquet", pa.table({"x": [1]})),
                                     "aggregates.parquet"),
    "aggregates' mean as text": (as_text("aggregates.parquet", "mean"), "aggregates.parquet"),
    "ranking of another schema": (replace_table("ranking.parquet", pa.table({"rank": ["a"]})),
                                  "ranking.parquet"),
    "ranking's loss as text": (as_text("ranking.parquet", "loss"), "ranking.parquet"),
    "replicates of another schema": (replace_table("replicates.parquet", pa.table({"y": [1]})),
                                     "replicates.parquet"),
    "series aggregates of another schema": (
        replace_table("timeseries_aggregates.parquet", pa.table({"t": ["x"]})),
        "timeseries_aggregates.parquet",
    ),
    "targets of another schema": (replace_table("targets.parquet", pa.table({"q": [1]})),
                                  "targets.parquet"),
    "sensitivity garbage": (lambda f: (f / "sensitivity.parquet").write_bytes(b"nope"),
                            "sensitivity.parquet"),
    "plots a file": (plots_as_a_file, "plots"),
    "report.html a folder": (report_as_a_folder, "report.html"),
}  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finished")
    write_folder(OutputStore(folder), sets=5, series_points=10, ranking=True, targets=True,
                 sensitivity="sobol", failed=1)  # fmt: skip
    return folder


@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_a_tampered_folder_is_an_error_naming_the_file_never_a_traceback(
    finished: Path, tmp_path: Path, tamper: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "out"
    shutil.copytree(finished, folder)
    change, named = TAMPERS[tamper]
    change(folder)
    codes = {command: main([command, str(folder)]) for command in ("report", "show")}
    output = capsys.readouterr().err
    assert set(codes.values()) <= {0, 2}, output
    assert 2 in codes.values(), output  # each tamper is found by one command at least
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert errors and all(named in line for line in errors), output


def test_a_tampered_calibration_is_an_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "calibration"
    folder.mkdir()
    (folder / CALIBRATION_FILE).write_text(json.dumps({"name": "c", "best": {"trial": "x"}}))
    pq.write_table(pa.table({"trial": [0]}), folder / TRIALS_FILE)
    assert main(["show", str(folder)]) == 2
    assert main(["report", str(folder)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and all(CALIBRATION_FILE in line for line in errors)
