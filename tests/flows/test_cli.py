"""The `simstudy` command: exit codes, messages, and no process left behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml

from flows.cli import main
from simstudy.design.expand import design_row_ids, expand_parameters
from simstudy.spec.loading import load_study

REPO = Path(__file__).parents[2]


def write_study(path: Path, **overrides) -> Path:
    document = {
        "name": "cli",
        "model": "tests.support.faulty:simulate",
        "parameters": {"grid": {"a": [1.0, 2.0]}},
        "replicates": 2,
        "seed": 3,
        "execution": {"timeout_seconds": 10, "retries": 0, "dask": {"n_workers": 1}},
        "output": str(path.parent / "out"),
    }
    document.update(overrides)
    path.write_text(yaml.safe_dump(document))
    return path


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO, env=env or dict(os.environ), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "replicates" in schema["properties"]
    assert schema["properties"]["replicates"]["description"]


def test_validate_lists_parameter_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(write_study(tmp_path / "s.yaml"))]) == 0
    out = capsys.readouterr().out
    assert "2 parameter sets x 2 replicates = 4 simulations" in out
    assert len([line for line in out.splitlines() if len(line.split()[0]) == 64]) == 2


def test_invalid_study_exits_2_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_study(tmp_path / "s.yaml", replicates=-1)
    assert main(["validate", str(path)]) == 2
    assert main(["run", str(path)]) == 2
    assert "replicates: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_other_studys_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "study.json").write_text(json.dumps({"name": "other", "study_id": "x"}))
    assert main(["run", str(write_study(tmp_path / "s.yaml"))]) == 2
    assert "holds results of another study ('other'" in capsys.readouterr().err


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    ("change", "args", "named"),
    [
        ({"execution": {"dask": {"memory_limit": "banana"}}}, [], "execution.dask.memory_limit"),
        ({"execution": {"timeout_seconds": 1e308}}, [], "execution.timeout_seconds"),
        ({}, ["--workers", "1000"], "execution.dask.n_workers"),
        ({}, ["--output", "/proc/simstudy-out"], "output: /proc/simstudy-out is on a kernel"),
        ({}, ["--output", "/sys/simstudy-out"], "output: /sys/simstudy-out is on a kernel"),
        ({"model": "tests.support.no_such_model:simulate"}, [], "model: cannot import"),
        ({"model": {"command": ["no-such-program-xyz"]}}, [], "model.command:"),
        ({"replicates": 10_000_000, "execution": {"batch_size": 1}}, [], "replicates:"),
    ],
)
def test_run_input_errors_exit_2_naming_the_field_before_the_output_is_touched(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, object],
    args: list[str],
    named: str,
) -> None:
    path = write_study(tmp_path / "s.yaml", **change)
    started = time.monotonic()
    assert main(["run", str(path), "--no-progress", *args]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(20)
def test_address_with_nothing_listening_exits_2_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    assert main(["run", str(write_study(tmp_path / "s.yaml")), "--address", address]) == 2
    assert time.monotonic() - started < 5
    assert f"execution.dask.address: nothing answers at {address}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_unreachable_prefect_api_url_exits_3_naming_it_without_a_traceback(
    tmp_path: Path,
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api"
    env = {**os.environ, "PREFECT_API_URL": url}
    started = time.monotonic()
    result = cli("run", str(write_study(tmp_path / "s.yaml")), "--no-progress", env=env, timeout=50)
    assert time.monotonic() - started < 40  # API_ANSWER_SECONDS, and the imports
    assert result.returncode == 3, result.stderr
    assert f"error: the Prefect API at PREFECT_API_URL={url} does not answer" in result.stderr
    assert "start that server" in result.stderr and "unset PREFECT_API_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(60)
def test_show_of_a_folder_that_does_not_exist_exits_2_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    result = cli("show", str(missing), timeout=50)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {missing} is not a simstudy output folder")
    assert "Traceback" not in result.stderr
    assert not missing.exists()


def test_every_user_error_prints_one_error_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows import cli as cli_module
    from flows.api import ApiStartError
    from flows.preflight import PreflightError
    from simstudy.errors import JournalError

    for error, code in [
        (JournalError("journal [line 3] is damaged"), 2),
        (PreflightError("no worker offers gpu=1"), 3),
        (ApiStartError("Prefect API at http://x/api not healthy"), 3),
    ]:

        def fail(args: object, error: Exception = error) -> int:
            raise error

        monkeypatch.setattr(cli_module, "run_command", fail)
        assert main(["run", "s.yaml"]) == code
        assert capsys.readouterr().err == f"error: {error}\n"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_preflight_refusal_exits_3_without_a_traceback(
    tmp_path: Path, prefect_api_url: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    study = write_study(
        tmp_path / "s.yaml",
        execution={"timeout_seconds": 10, "aggregation_resources": {"gpu": 1}},
    )
    result = cli("run", str(study), "--no-progress", env=env)
    assert result.returncode == 3, result.stderr
    assert "error: execution.aggregation_resources asks for gpu=1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(30)
def test_validate_refuses_bombs_and_huge_designs_within_seconds(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(
        "name: b\nmodel: m:f\nreplicates: 1\nseed: 1\n"
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{b}: &{b} [{','.join([f'*{a}'] * 9)}]\n" for a, b in pairwise("abcdefghi"))
        + "parameters: {grid: {x: *i}}\n"
    )
    grid = write_study(
        tmp_path / "grid.yaml", parameters={"grid": {f"p{i}": list(range(10)) for i in range(10)}}
    )
    many = write_study(tmp_path / "many.yaml", replicates=1_000_000, execution={"batch_size": 1})
    for path, named in [
        (bomb, "expand to more than 1,000,000 values"),
        (grid, "parameters: the design has 10,000,000,000 parameter sets"),
        (many, "execution.batch_size: 1 replicates per task run gives 2,000,000 task runs"),
    ]:
        started = time.monotonic()
        result = cli("validate", str(path), timeout=30)
        assert time.monotonic() - started < 10
        assert result.returncode == 2, result.stderr
        assert named in result.stderr and "Traceback" not in result.stderr


def test_parameter_file_errors_exit_2_naming_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for text, named in [
        ("a,a\n1,2\n", "column 'a' appears more than once"),
        ("a\n1\nx\n5\n", "column 'a' mixes numbers and text"),
        ("a\n100000000000000000000000\n", "column 'a' holds 100000000000000000000000"),
    ]:
        (tmp_path / "p.csv").write_text(text)
        path = write_study(tmp_path / "s.yaml", parameters={"file": "p.csv"})
        assert main(["validate", str(path)]) == 2
        assert named in capsys.readouterr().err


def test_exponent_floats_are_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "name: e\nmodel: tests.support.faulty:simulate\nreplicates: 1\nseed: 1\n"
        "parameters: {grid: {a: [1e-3, 1e4]}}\n"
    )
    assert main(["validate", str(path)]) == 0
    assert '{"a": 0.001}' in capsys.readouterr().out


def test_report_of_a_folder_that_is_no_finished_study_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not a study")
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a simstudy output folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert not (tmp_path / "report.html").exists()


def test_report_rebuilds_plots_and_page_from_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from simstudy.output.location import OutputStore
    from tests.simstudy.report.folders import write_folder

    write_folder(OutputStore(tmp_path), sets=3, ranking=True)
    assert main(["report", str(tmp_path)]) == 0
    assert f"report: {tmp_path / 'report.html'}" in capsys.readouterr().err
    assert (tmp_path / "plots" / "loss-profiles.png").stat().st_size > 1000
    assert "<h2>Ranking</h2>" in (tmp_path / "report.html").read_text()


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.usefixtures("no_leftover_processes")
def test_report_of_a_real_study_with_a_failed_set(tmp_path: Path, prefect_api_url: str) -> None:
    sets = [{"a": 1.0, "behavior": "ok"}, {"a": 2.0, "behavior": "ok"}]
    sets.append({"a": 3.0, "behavior": "raise"})
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    run = cli("run", str(write_study(tmp_path / "s.yaml", parameters={"list": sets})),
              "--no-progress", env=env)  # fmt: skip
    assert run.returncode == 1, run.stderr
    out = tmp_path / "out"
    for stale in (out / "plots").glob("*.png"):  # the report is rebuilt from the files alone
        stale.unlink()
    report = cli("report", str(out), env=env)
    assert report.returncode == 0, report.stderr
    assert str(out / "report.html") in report.stderr
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert plots == [
        "by-parameter-x.png", "by-parameter-y.png", "distribution-x.png", "distribution-y.png",
        "series-series.png",
    ]  # fmt: skip
    text = (out / "report.html").read_text()
    assert text.count('<img src="data:image/png;base64,') == 5
    assert "<h2>Failed parameter sets</h2>" in text and "model failed on purpose" in text


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("no_leftover_processes")
def test_run_exit_codes_and_show(tmp_path: Path, prefect_api_url: str) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    ok = cli("run", str(write_study(tmp_path / "ok.yaml")), "--no-progress", env=env)
    assert ok.returncode == 0, ok.stderr
    assert "Completed: 2/2 parameter sets aggregated; replicates: 4 ok" in ok.stderr
    shown = cli("show", str(tmp_path / "out"), env=env)
    assert shown.returncode == 0 and "cli: ok" in shown.stderr

    failing = write_study(
        tmp_path / "bad.yaml",
        parameters={"list": [{"behavior": "raise"}]},
        output=str(tmp_path / "bad"),
    )
    failed = cli("run", str(failing), "--no-progress", env=env)
    assert failed.returncode == 1
    assert "1 parameter set(s) failed" in failed.stderr
    assert "model failed on purpose" in failed.stderr


HOSTILE_TEXT = "[/x] [bold red]red[/bold red] :smile: [/tmp/data.csv] \x00 \u202eexe.txt \x1b[31m"


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("no_leftover_processes")
def test_user_text_is_shown_as_it_is_never_as_markup_or_terminal_controls(
    tmp_path: Path, prefect_api_url: str
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    study = write_study(
        tmp_path / "hostile.yaml", name="hostile",
        parameters={"list": [{"behavior": "raise_text", "error_text": HOSTILE_TEXT}]},
    )  # fmt: skip
    for args in (["--no-progress"], []):  # every log line on the console, or the live bar
        failed = cli("run", str(study), "--overwrite", *args, env=env)
        assert failed.returncode == 1, failed.stderr
        assert "MarkupError" not in failed.stderr and "Traceback" not in failed.stderr
        shown = "[/x] [bold red]red[/bold red] :smile: [/tmp/data.csv] \\x00 \\u202eexe.txt"
        final = failed.stderr.strip().splitlines()[-1]
        assert final.startswith("Failed: 1 parameter set(s) failed") and shown in final
        assert not {"\x00", "\u202e", "\x1b[31m"} & set(failed.stderr.split(" "))
        assert "\x00" not in failed.stderr and "\u202e" not in failed.stderr
    show = cli("show", str(tmp_path / "out"), env=env)
    assert show.returncode == 0 and "\x00" not in show.stderr and "\u202e" not in show.stderr
    assert "[bold red]red[/bold red]" in show.stderr.replace("\n", "")


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_ctrl_c_stops_everything_including_the_api_server(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    study = write_study(
        tmp_path / "slow.yaml",
        parameters={"list": [{"behavior": "hang"}]},
        execution={"timeout_seconds": 600, "dask": {"n_workers": 1}},
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", str(study), "--no-progress"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    parent = psutil.Process(process.pid)
    seen: set[int] = set()
    deadline = time.monotonic() + 120
    # Wait until a replicate is running in a model process (the hang), noting every process.
    while time.monotonic() < deadline:
        children = parent.children(recursive=True)
        seen.update(p.pid for p in children)
        if any("simstudy.run.runners._child" in " ".join(_cmdline(p)) for p in children):
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the study never started a model process")
    assert any(
        "uvicorn" in " ".join(_cmdline(psutil.Process(p))) for p in seen if psutil.pid_exists(p)
    )
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()  # its API server and workers die with it
        process.communicate()
        pytest.fail("simstudy run did not stop within 60 s of Ctrl-C")
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.2)
    assert [p for p in seen if _alive(p)] == []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_validate_shows_a_sampled_design(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bounds = {"a": [0.5, 2.0], "b": {"low": 1, "high": 3, "integer": True}}
    sample = {"method": "saltelli", "n": 8, "seed": 4, "bounds": bounds}
    path = write_study(tmp_path / "s.yaml", parameters={"sample": sample})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "design: saltelli: n=8 x (D+2), D=2 = 32 sets, seed 4" in out
    assert "distinct parameter sets: repeated rows run once" in out  # b has three values
    listed = [line for line in out.splitlines() if len(line.split("  ")[0]) == 64]
    assert len(listed) == 10 and '"a": ' in listed[0]
    assert "more parameter sets" in out


def test_validate_shows_a_space_filling_design_s_discrepancy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = {"method": "sobol", "n": 64, "bounds": {"a": [0, 1]}}
    path = write_study(tmp_path / "s.yaml", parameters={"sample": sample})
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "design: sobol: n = 64 sets, seed 3" in out
    assert "discrepancy (centred L2, unit space; lower is more uniform): " in out


def test_validate_refuses_a_sobol_design_of_the_wrong_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = {"method": "sobol", "n": 100, "bounds": {"a": [0, 1]}}
    path = write_study(tmp_path / "s.yaml", parameters={"sample": sample})
    assert main(["validate", str(path)]) == 2
    assert "parameters.sample: n is 100, but sobol needs a power of two: use 64 or 128" in (
        capsys.readouterr().err
    )


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("no_leftover_processes")
def test_a_saltelli_design_with_repeated_rows_runs_each_set_once(
    tmp_path: Path, prefect_api_url: str
) -> None:
    # a takes two values: the 8 x (2+2) = 32 design rows hold 2 x (at most 16) sets.
    bounds = {"a": {"low": 1, "high": 2, "integer": True}, "b": [0.0, 1.0]}
    sample = {"method": "saltelli", "n": 8, "bounds": bounds}
    path = write_study(tmp_path / "s.yaml", parameters={"sample": sample}, replicates=1)
    study = load_study(path)
    distinct = len(expand_parameters(study))
    assert distinct < len(design_row_ids(study)) == 32
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url}
    run = cli("run", str(path), "--no-progress", env=env)
    assert run.returncode == 0, run.stderr
    assert f"{distinct}/{distinct} parameter sets aggregated; replicates: {distinct} ok" in (
        run.stderr
    )
    # The model's y is 2a: a explains all of its variance, b none.
    output = tmp_path / "out"
    indices = pq.read_table(output / "sensitivity.parquet").to_pylist()
    s1 = {r["parameter"]: r["value"] for r in indices if r["output"] == "y" and r["index"] == "S1"}
    assert s1["a"] == pytest.approx(1.0, abs=0.2) and s1["b"] == pytest.approx(0.0, abs=0.2)
    page = (output / "report.html").read_text()
    assert "Sensitivity" in page and "data:image/png;base64," in page
    assert f"report: {output / 'report.html'}" in run.stderr


def test_validate_shows_the_targets_and_refuses_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = Path(__file__).parents[2] / "examples" / "seir-calibration.yaml"
    assert main(["validate", str(example)]) == 0
    assert "incidence: 100 values (t 0-99), loss poisson" in capsys.readouterr().out
    (tmp_path / "observed.csv").write_text("output,t,value\nincidence,0,-3\n")
    study = yaml.safe_load(example.read_text())
    study["targets"]["data"] = str(tmp_path / "observed.csv")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    assert main(["validate", str(path)]) == 2
    assert "column 'value', row 1: -3 is not a count" in capsys.readouterr().err
