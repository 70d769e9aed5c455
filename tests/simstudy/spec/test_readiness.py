"""Checks of a study against this machine: output, scheduler address, model."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from simstudy.errors import StudyError
from simstudy.spec.loading import validate_study
from simstudy.spec.readiness import (
    REFUSED_GRACE_SECONDS,
    address_problem,
    check_ready,
    cluster_class_problem,
    cluster_output_problem,
    filesystem_type,
    local_output_problem,
    model_problem,
    output_problem,
    remote_hosts,
)
from simstudy.spec.study import Study


def study_with(**fields: Any) -> Study:
    document: dict[str, Any] = {
        "name": "r",
        "model": "simstudy.models.seir:simulate",
        "parameters": {"grid": {"beta": [0.2]}},
        "replicates": 1,
        "seed": 1,
    }
    document.update(fields)
    return validate_study(document)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_ready_study_passes(tmp_path: Path) -> None:
    check_ready(study_with(output=str(tmp_path / "out")), import_model=True)
    check_ready(study_with(output=str(tmp_path / "out")), import_model=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("output", ["/proc/simstudy-out", "/sys/simstudy-out", "/proc/self"])
def test_output_on_a_kernel_pseudo_filesystem_is_refused(output: str) -> None:
    problem = output_problem(output)
    assert problem is not None
    assert problem.startswith("output: ") and "pseudo filesystem" in problem


def test_output_under_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    assert "is a file" in str(output_problem(str(tmp_path / "file")))
    assert "is a file" in str(output_problem(str(tmp_path / "file" / "out")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_output_in_an_unwritable_folder_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "cannot write in" in str(output_problem(str(locked / "out")))


def test_output_on_disk_and_in_memory_is_accepted(tmp_path: Path) -> None:
    assert output_problem(str(tmp_path / "a" / "b")) is None
    assert output_problem("memory://studies/r") is None
    assert filesystem_type(tmp_path) not in (None, "proc", "sysfs")


def test_output_url_without_its_filesystem_is_named() -> None:
    assert str(output_problem("nosuchproto://bucket/x")).startswith("output: cannot open")


@pytest.mark.timeout(10)
def test_address_with_nothing_listening_is_named_after_a_short_grace() -> None:
    address = f"tcp://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    problem = address_problem(address)
    assert time.monotonic() - started < REFUSED_GRACE_SECONDS + 1.0
    assert problem is not None
    assert problem.startswith(f"execution.dask.address: nothing answers at {address}")


@pytest.mark.timeout(10)
def test_address_that_never_answers_is_named_within_the_deadline() -> None:
    # A listener whose accept queue is full drops new connection attempts unanswered.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        started = time.monotonic()
        problem = address_problem(f"tcp://127.0.0.1:{port}", timeout=0.5)
        assert time.monotonic() - started < 1.5
        for filler in fillers:
            filler.close()
    assert str(problem).startswith("execution.dask.address: nothing answers")


def test_address_with_a_listener_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert address_problem(f"tcp://127.0.0.1:{port}") is None
        assert address_problem(f"127.0.0.1:{port}") is None


@pytest.mark.parametrize("import_model", [True, False])
def test_model_that_does_not_import_is_named(import_model: bool) -> None:
    study = study_with(model="simstudy.models.no_such_model:simulate")
    problem = model_problem(study, import_model=import_model)
    assert problem is not None and problem.startswith("model: ")
    assert "simstudy.models.no_such_model" in problem


def test_model_whose_import_fails_or_lacks_the_function_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_model_mod.py").write_text("raise RuntimeError('no data file')\n")
    (tmp_path / "plain_model_mod.py").write_text("x = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = model_problem(study_with(model="broken_model_mod:simulate"), import_model=True)
    assert "RuntimeError: no data file" in str(broken)
    missing = model_problem(study_with(model="plain_model_mod:simulate"), import_model=True)
    assert missing == "model: module 'plain_model_mod' has no function 'simulate'"


def test_command_that_is_not_found_is_named(tmp_path: Path) -> None:
    study = study_with(model={"command": ["no-such-program-xyz"], "cwd": str(tmp_path)})
    assert str(model_problem(study, import_model=True)).startswith("model.command:")
    study = study_with(model={"command": ["python3"], "cwd": str(tmp_path / "nope")})
    assert str(model_problem(study, import_model=True)).startswith("model.cwd:")
    assert (
        model_problem(study_with(model={"command": ["python3", "m.py"]}), import_model=True) is None
    )


def test_model_on_a_remote_cluster_is_left_to_preflight() -> None:
    study = study_with(model="nowhere_here:simulate", execution={"dask": {"address": "tcp://h:1"}})
    assert model_problem(study, import_model=True) is None


@pytest.mark.timeout(20)
def test_every_problem_is_listed_by_field(tmp_path: Path) -> None:
    study = study_with(
        model="nowhere_here:simulate",
        output="/proc/out",
        execution={"dask": {"address": f"tcp://127.0.0.1:{closed_port()}"}},
    )
    with pytest.raises(StudyError) as caught:
        check_ready(study, import_model=True)
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "output",
        "execution.dask.address",
    ]


def test_unimportable_cluster_class_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail, installed or not.
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    monkeypatch.setitem(sys.modules, "dask_kubernetes", None)
    slurm = cluster_class_problem("dask_jobqueue.SLURMCluster") or ""
    assert slurm.startswith("execution.dask.cluster_class: cannot import 'dask_jobqueue.")
    assert "pip install 'simstudy[slurm]'" in slurm
    kube = cluster_class_problem("dask_kubernetes.operator.KubeCluster") or ""
    assert "pip install 'simstudy[kubernetes]'" in kube
    assert "install 'no_such_pkg'" in (cluster_class_problem("no_such_pkg.Cluster") or "")


def test_cluster_class_must_be_a_dask_cluster() -> None:
    assert cluster_class_problem("distributed.LocalCluster") is None
    for path in ("os.system", "distributed.NoSuchCluster"):
        assert "is not a Dask cluster class" in (cluster_class_problem(path) or "")


def test_study_naming_a_missing_cluster_class_fails_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    study = study_with(
        output=str(tmp_path / "out"),
        execution={"dask": {"cluster_class": "dask_jobqueue.SLURMCluster"}},
    )
    with pytest.raises(StudyError, match=r"simstudy\[slurm\]"):
        check_ready(study, import_model=False)


def test_local_output_for_workers_on_other_hosts_fails_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problem = local_output_problem(str(tmp_path / "out"), "workers 10.0.0.5") or ""
    assert problem.startswith(f"output: {tmp_path / 'out'} is a folder on this host's")
    assert "workers 10.0.0.5 run on other hosts" in problem and "s3://" in problem
    assert local_output_problem("memory://shared", "workers 10.0.0.5") is None
    monkeypatch.setattr("simstudy.spec.readiness.filesystem_type", lambda path: "nfs4")
    assert local_output_problem(str(tmp_path / "out"), "workers 10.0.0.5") is None


def test_cluster_class_on_other_hosts_needs_a_shared_output(tmp_path: Path) -> None:
    def study(cluster_class: str, output: str) -> Study:
        return study_with(output=output, execution={"dask": {"cluster_class": cluster_class}})

    local_output = str(tmp_path / "out")
    # Not a LocalCluster: its workers may be anywhere (dask-jobqueue, Kubernetes).
    remote = cluster_output_problem(study("distributed.SpecCluster", local_output)) or ""
    assert "the workers of distributed.SpecCluster run on other hosts" in remote
    assert cluster_output_problem(study("distributed.SpecCluster", "memory://o")) is None
    assert cluster_output_problem(study("distributed.LocalCluster", local_output)) is None
    assert "execution.dask.shared_output: true" in remote
    # The user says the folder is the same on every worker's host (one node, or a shared
    # filesystem simstudy does not recognise).
    shared = study_with(
        output=local_output,
        execution={"dask": {"cluster_class": "distributed.SpecCluster", "shared_output": True}},
    )
    assert cluster_output_problem(shared) is None


def test_workers_on_this_machine_are_not_remote() -> None:
    here = [socket.gethostname(), "127.0.0.1", "127.0.1.1", "localhost", "::1"]
    assert remote_hosts([*here, "192.0.2.7"]) == ["192.0.2.7"]
