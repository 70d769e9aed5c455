"""Outputs stream from the workers to the result files: the flow never holds a study's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_processes")]

REPO = Path(__file__).resolve().parents[2]
SETS, REPLICATES, POINTS = 40, 200, 5_000
"""40 M series points: 320 MB as float64, several GB as per-replicate Python objects.

A set's exact values (replicates x points, for quantiles) wait in the flow until its
aggregation group is aggregated: 8 MB a set here."""
FLOW_BUDGET_MIB = 700
"""The flow process's peak (measured: 560-600 MiB). Holding the outputs as records, as the
flow did before (25 times their size), or writing the long series file in one piece per
part (450 MiB more at 365-point series) would exceed it."""


class PeakRss:
    """Sample one process's own resident memory until it exits; keep the peak."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.process = psutil.Process(pid)
        self.peak = 0
        self.interval = interval
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(self.interval)

    def join(self) -> int:
        """Return the peak in MiB once the process has exited."""
        self._thread.join(timeout=10)
        return self.peak >> 20


@pytest.mark.timeout(420)
def test_a_study_larger_than_the_flow_may_hold_streams_to_correct_files(
    tmp_path: Path, prefect_api_url: str
) -> None:
    output = tmp_path / "out"
    study = {
        "name": "streaming",
        "model": "tests.support.faulty:simulate",
        "fixed": {"series_points": POINTS},
        "parameters": {"grid": {"a": [float(i) for i in range(SETS)]}},
        "replicates": REPLICATES,
        "seed": 3,
        "execution": {"runner": "thread", "dask": {"n_workers": 2}},
        "output": str(output),
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    env = {**os.environ, "PREFECT_API_URL": prefect_api_url, "PYTHONPATH": str(REPO)}
    with open(tmp_path / "run.log", "wb") as log:
        flow = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "run", str(path)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
        meter = PeakRss(flow.pid)
        try:
            assert flow.wait(timeout=360) == 0, (tmp_path / "run.log").read_text()[-3000:]
        finally:
            if flow.poll() is None:
                flow.kill()
    peak = meter.join()
    print(f"streaming: {SETS * REPLICATES * POINTS:,} points, flow process peak {peak} MiB")
    assert 0 < peak <= FLOW_BUDGET_MIB

    replicates = pq.read_table(output / "replicates.parquet")
    assert replicates.num_rows == SETS * REPLICATES
    assert set(replicates.column("status").to_pylist()) == {"ok"}
    # Every point of every series is in the long file, with its value: a * t + seed % 7.
    sets = json.loads((output / "study.json").read_text())["parameter_sets"]
    ids = pa.array([ps["param_id"] for ps in sets])
    a_by_index = np.array([ps["params"]["a"] for ps in sets])
    seeds = np.zeros((len(ids), REPLICATES), dtype=np.int64)
    index = pc.index_in(replicates.column("param_id"), ids).to_numpy()
    seeds[index, replicates.column("replicate").to_numpy()] = replicates.column("seed").to_numpy()
    rows = 0
    series = pq.ParquetFile(output / "timeseries.parquet")
    for batch in series.iter_batches(batch_size=262_144):
        set_index = pc.index_in(batch.column("param_id"), ids).to_numpy()
        replicate = batch.column("replicate").to_numpy()
        t = batch.column("t").to_numpy()
        expected = a_by_index[set_index] * t + seeds[set_index, replicate] % 7
        assert np.array_equal(batch.column("value").to_numpy(), expected)
        rows += batch.num_rows
    assert rows == SETS * REPLICATES * POINTS
