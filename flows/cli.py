"""The `simstudy` command: run, validate, show, report, schema.

Exit codes: 0 success, 1 the study failed, 2 invalid input (a study, an output folder, a
journal: nothing was started), 3 the environment (a Prefect API that cannot be started or
reached, a cluster that cannot run the study: preflight), 130 interrupted. Every error a
user can cause (`SimstudyError`) prints as `error: ...` with its exit code, no traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from typing import Any

from simstudy.analysis.targets import load_targets
from simstudy.calibrate.folder import (
    CALIBRATION_FILE,
    calibration_id,
    calibration_summary,
    check_calibration_dir,
)
from simstudy.calibrate.posterior import (
    POSTERIOR_FILE,
    posterior_plan,
    posterior_summary,
    study_prior,
)
from simstudy.calibrate.spec import PosteriorSettings
from simstudy.design.expand import expand_parameters, sample_seed
from simstudy.design.plan import plan_batches
from simstudy.display import visible
from simstudy.errors import OutputDirError, SimstudyError, StudyError
from simstudy.output.location import OutputStore
from simstudy.output.locking import output_lock
from simstudy.output.parts import PARTS_DIR, stored_replicates
from simstudy.output.results import (
    REPLICATES_FILE,
    REPORT_FILE,
    STUDY_FILE,
    check_output_dir,
    study_id,
)
from simstudy.spec.loading import load_study
from simstudy.spec.readiness import check_ready
from simstudy.spec.study import MAX_LOCAL_WORKERS, Study
from simstudy.summary_table import ranking_summary, summary_table
from simstudy.terminal import TerminalConsole, labelled

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
API_ANSWER_SECONDS = 5.0
"""How long a run waits for the Prefect API at PREFECT_API_URL to answer (one starting up)."""
SHOWN_SAMPLED_SETS = 10
"""Parameter sets `validate` lists of a sampled design (all of a grid, list or file)."""

# soft_wrap: messages are never hard-wrapped, so they stay greppable in logs.
console = TerminalConsole(stderr=True, soft_wrap=True)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the `simstudy` command."""
    parser = argparse.ArgumentParser(
        prog="simstudy", description="Simulation studies on Prefect and Dask."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run a study")
    run.add_argument("study", help="study file (YAML or JSON)")
    run.add_argument("--output", help="output folder (default: the study's output)")
    run.add_argument(
        "--workers",
        type=int,
        help=f"worker processes of the local Dask cluster (1 to {MAX_LOCAL_WORKERS})",
    )
    run.add_argument("--address", help="address of an existing Dask scheduler")
    run.add_argument("--overwrite", action="store_true", help="replace another study's results")
    run.add_argument(
        "--fresh", action="store_true", help="discard finished replicates of an earlier run"
    )
    run.add_argument("--no-progress", action="store_true", help="no live progress bar")
    validate = commands.add_parser("validate", help="check a study and list its parameter sets")
    validate.add_argument("study")
    show = commands.add_parser("show", help="summarise a finished study")
    show.add_argument("output", help="output folder of a study")
    report = commands.add_parser("report", help="rebuild the plots and report.html of a study")
    report.add_argument("output", help="output folder of a finished study")
    commands.add_parser("schema", help="print the JSON Schema of the study file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "schema":
            print(json.dumps(Study.model_json_schema(), indent=2))
            return EXIT_OK
        if args.command == "validate":
            return validate_command(args.study)
        if args.command == "show":
            show_results(output_folder(args.output), calibration=None)
            return EXIT_OK
        if args.command == "report":
            # matplotlib is imported only when a report is asked for.
            from simstudy.report import build_report
            from simstudy.report.calibration import build_calibration_report

            store = OutputStore(args.output)
            calibration = store.exists(CALIBRATION_FILE) and not store.exists(STUDY_FILE)
            if store.exists(POSTERIOR_FILE):
                from simstudy.report.posterior import build_posterior_report

                built = build_posterior_report(store)
            elif calibration:
                built = build_calibration_report(store)
            else:
                built = build_report(store)
            console.print(f"report: {built}")
            return EXIT_OK
        return run_command(args)
    except SimstudyError as exc:
        console.print(labelled("error:", "red", str(exc)))
        return exc.exit_code
    except KeyboardInterrupt:
        console.print(
            labelled("interrupted:", "yellow", f"running replicates were stopped. {_kept(args)}")
        )
        return EXIT_INTERRUPTED


def _kept(args: argparse.Namespace) -> str:
    """Say how many finished replicates an interrupted run kept, and how to resume."""
    if args.command != "run":
        return ""
    try:
        store = OutputStore(load_study(args.study, cli_overrides(args)).output_dir)
    except (SimstudyError, ImportError):
        return ""
    kept = stored_replicates(store)
    return (
        f"{kept} finished replicates are kept in {store.path(PARTS_DIR)}; run the same command "
        "again to resume (--fresh starts over)."
    )


class InterruptFlag:
    """SIGINT handler that remembers the interrupt.

    The KeyboardInterrupt it raises can surface wrapped in another exception (for example
    when it lands inside pydantic serialisation in Prefect), making the flow merely
    Failed; the flag still tells the command it was interrupted.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.seen = False
        self.stop = stop

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True
        self.stop.set()  # the study stops at its next poll even if the raise below is swallowed
        raise KeyboardInterrupt


def validate_command(path: str) -> int:
    """Print the expanded parameter table of a valid study."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(path)
        if study.calibrate is not None:
            return validate_calibration(study)
        sets = expand_parameters(study)  # a sampled design warns of repeated rows
    batches = plan_batches(study, sets)
    targets = load_targets(study)  # the observed data checked, as before a run
    for warning in caught:
        console.print(labelled("warning:", "yellow", str(warning.message)))
    say(
        f"{study.name}: {len(sets)} parameter sets x {study.replicates} replicates = "
        f"{len(sets) * study.replicates} simulations in {len(batches)} batches "
        f"of up to {max(b.size for b in batches)}"
    )
    shown = sets
    if study.parameters.sample is not None:
        from simstudy.design.sampling import design_summary

        say("\n".join(design_summary(study.parameters.sample, sample_seed(study), len(sets))))
        shown = sets[:SHOWN_SAMPLED_SETS]
    for ps in shown:
        say(f"{ps.param_id}  {json.dumps(ps.params, sort_keys=True)}")
    if len(shown) < len(sets):
        say(f"... and {len(sets) - len(shown):,} more parameter sets")
    if targets is not None:
        say(targets.describe())
    return EXIT_OK


def say(text: str) -> None:
    """Print user-facing text on stdout, its control characters as escapes."""
    print(visible(text))


def show_results(store: OutputStore, calibration: bool | None) -> None:
    """Print a finished study's summary, or a calibration's; then the best sets by loss."""
    if calibration is None:
        calibration = store.exists(CALIBRATION_FILE) and not store.exists(STUDY_FILE)
    if store.exists(POSTERIOR_FILE):
        console.print(posterior_summary(store))
    elif calibration:
        console.print(calibration_summary(store))
    else:
        console.print(summary_table(store))
    best = ranking_summary(store)
    if best is not None:
        console.print(best)


def output_folder(path: str) -> OutputStore:
    """Return the output folder of a study or calibration, or raise `OutputDirError`."""
    store = OutputStore(path)
    if store.is_file_location() or not (store.exists(STUDY_FILE) or store.exists(CALIBRATION_FILE)):
        raise OutputDirError(
            f"{store} is not a simstudy output folder (it has no {STUDY_FILE} nor "
            f"{CALIBRATION_FILE}): give the output folder of a study"
        )
    return store


def validate_calibration(study: Study) -> int:
    """Print a valid calibration: its search space, trials in flight, replicates and targets."""
    settings = study.calibrate
    assert settings is not None and study.parameters.sample is not None
    targets = load_targets(study)
    if isinstance(settings, PosteriorSettings):
        say(posterior_plan(study.name, settings))
        priors = study_prior(study.parameters.sample, settings).describe()
        for name, prior in priors.items():
            say(f"  {name}: {prior}")
        if targets is not None:
            say(targets.describe())
        return EXIT_OK
    say(
        f"{study.name}: calibration of {settings.trials} trials, {settings.parallel} in flight, "
        f"{settings.min_replicates} to {settings.max_replicates} "
        f"replicates each, optuna {settings.sampler} sampler, seed {settings.seed}"
    )
    for name, bound in study.parameters.sample.bounds.items():
        say(f"  {name}: {bound.model_dump(exclude_defaults=True)}")
    if targets is not None:
        say(targets.describe())
    return EXIT_OK


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Return the study overrides of --output, --workers and --address."""
    dask: dict[str, Any] = {}
    if args.address:
        dask["address"] = args.address  # another cluster: the study's dask settings go
    if args.workers is not None:
        dask["n_workers"] = args.workers
    return {"output": args.output, "execution": {"dask": dask} if dask else None}


def checked_study(args: argparse.Namespace) -> tuple[Study, OutputStore]:
    """Return the study of a run and its output, or raise an input error; nothing starts."""
    study = load_study(args.study, cli_overrides(args))
    sets = expand_parameters(study) if study.calibrate is None else []
    # Output, scheduler and model are checked before the output folder is touched.
    check_ready(study, import_model=True)
    store = OutputStore(study.output_dir)
    try:
        if study.calibrate is None:
            check_output_dir(store, study_id(study, sets), args.overwrite)
        else:
            check_calibration_dir(store, calibration_id(study), args.overwrite)
        if store.local is not None and store.local.exists():
            with output_lock(store):  # refuse now, before anything starts, if a run holds it
                pass
    except OSError as exc:
        raise StudyError(study.name, [f"output: cannot use {store}: {exc}"]) from exc
    return study, store


def check_api_url(timeout: float = API_ANSWER_SECONDS) -> None:
    """Raise `ApiStartError` unless the Prefect API at PREFECT_API_URL (if set) answers."""
    from flows.api import ApiStartError  # Prefect is imported only for a run

    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=min(timeout, 2)):
                return
        except urllib.error.HTTPError:
            return  # it answers: what it answers (a key it wants) is Prefect's to say
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
        if time.monotonic() >= deadline:
            raise ApiStartError(
                f"the Prefect API at PREFECT_API_URL={url} does not answer ({reason}) after "
                f"{timeout:g} s: start that server (`prefect server start`), or unset "
                "PREFECT_API_URL to run on a temporary local API"
            )
        time.sleep(0.5)


class QuietUserErrors(logging.Filter):
    """Keep console log lines of a user error (with its traceback) out: `main` prints it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for a record carrying a `SimstudyError`."""
        return not (record.exc_info and isinstance(record.exc_info[1], SimstudyError))


class VisibleText(logging.Filter):
    """Write a log line's control and bidirectional characters as escapes (a model's error
    with a NUL or U+202E would otherwise reach the terminal as it is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its visible form when they differ; keep it."""
        message = record.getMessage()
        shown = visible(message)
        if shown != message:
            record.msg, record.args = shown, None
        return True


def filter_console_logs() -> None:
    """Filter the console handlers of Prefect's logging (set up once Prefect is imported)."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            for kind in (QuietUserErrors, VisibleText):
                if not any(isinstance(f, kind) for f in handler.filters):
                    handler.addFilter(kind())
            # Its Rich console turns ':smile:' in a model's error into an emoji. Same
            # console, theme and level colours; only strings render as TerminalConsole's.
            handler.console.__class__ = TerminalConsole


def raise_user_error(state: Any) -> None:
    """Raise the `SimstudyError` that failed a flow run, if one did (a preflight refusal)."""
    if state.is_failed():
        error = state.result(raise_on_failure=False)
        if isinstance(error, SimstudyError):
            raise error


def import_flow(study: Study) -> None:
    """Import the flow and what its run needs (Prefect, Dask; Optuna for a calibration)."""
    import flows.orchestrator
    import flows.progress_bar
    import flows.study

    if isinstance(study.calibrate, PosteriorSettings):
        import flows.posterior  # noqa: F401 (the flow imports it when it runs)
    elif study.calibrate is not None:
        import flows.calibrate  # noqa: F401 (the flow imports it when it runs)
    filter_console_logs()


def run_command(args: argparse.Namespace) -> int:
    """Validate, then run the study on one local Prefect API and a Dask cluster."""
    study, store = checked_study(args)

    if not args.no_progress:
        # Log lines of this process and of the Dask workers (which inherit the variable)
        # would tear the live progress bar; warnings still show, and every line still
        # reaches the Prefect API. --no-progress keeps the full console log.
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")

    from flows.api import prefect_api  # imports Prefect only once its server is starting

    check_api_url()
    started = time.monotonic()
    interrupt = InterruptFlag(threading.Event())
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        # Prefect and the flow are imported while the API server starts (seconds each):
        # validation errors above came back in well under a second.
        with prefect_api(while_starting=lambda: import_flow(study)) as api_url:
            from flows.orchestrator import STOP_REQUESTED
            from flows.progress_bar import progress_bar
            from flows.study import simulation_study

            STOP_REQUESTED.clear()
            interrupt.stop = STOP_REQUESTED  # a Ctrl-C from now on stops the study's loop
            console.print(f"Prefect API: {api_url}")
            with progress_bar(console, enabled=not args.no_progress):
                state = simulation_study(
                    study=study, overwrite=args.overwrite, fresh=args.fresh, return_state=True
                )
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupt.seen:
        raise KeyboardInterrupt
    raise_user_error(state)
    if store.exists(REPLICATES_FILE) or store.exists(CALIBRATION_FILE):
        show_results(store, calibration=study.calibrate is not None)
    if store.exists(REPORT_FILE):
        console.print(f"report: {store.path(REPORT_FILE)}")
    elapsed = time.monotonic() - started
    console.print(f"{state.name}: {state.message} [{elapsed:.1f} s]")
    return EXIT_OK if state.is_completed() else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
