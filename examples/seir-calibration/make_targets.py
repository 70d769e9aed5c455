"""Write observed.csv: the daily incidence of one epidemic of a known truth.

The fixed parameters are read from ../seir-calibration.yaml, so the observed epidemic and
the study's simulations share everything but beta and gamma. Run from anywhere:

    python examples/seir-calibration/make_targets.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from simstudy.models.seir import simulate

TRUTH = {"beta": 0.35, "gamma": 0.15}
"""The parameters the calibration should find (R0 = beta / gamma = 2.33)."""
SEED = 42
"""Seed of the observed epidemic: a fixed one, so observed.csv is reproducible."""

HERE = Path(__file__).resolve().parent


def main() -> None:
    """Simulate the truth once and write its daily incidence as series targets."""
    study = yaml.safe_load((HERE.parent / "seir-calibration.yaml").read_text())
    incidence = simulate({**study["fixed"], **TRUTH}, seed=SEED)["incidence"]
    with (HERE / "observed.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["output", "t", "value"])
        writer.writerows(["incidence", t, int(value)] for t, value in enumerate(incidence))


if __name__ == "__main__":
    main()
