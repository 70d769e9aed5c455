"""report.html as a browser shows it: headless Chromium renders every embedded image."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from simstudy.output.location import OutputStore
from simstudy.report import build_report
from tests.simstudy.report.folders import write_folder

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, picture: Path, profile: Path, height: int, width: int = 1000) -> None:
    """Render a local page headless into a PNG; the browser and its children end with it."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
        f"--screenshot={picture}", page.as_uri(),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        process.wait(timeout=90)
    finally:  # Chromium forks helpers (zygote, renderer): end its whole session
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def coloured_share(picture: Path) -> float:
    """Return the share of clearly coloured pixels: plots have them, text and tables do not."""
    rgb = imread(picture)[..., :3]
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.3).mean())


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_chromium_shows_the_report_with_its_images_decoded(tmp_path: Path) -> None:
    store = OutputStore(tmp_path / "out")
    write_folder(store, sets=8, series_points=60, ranking=True, targets=True, sensitivity="sobol")
    page = Path(build_report(store))
    picture = tmp_path / "report.png"
    screenshot(page, picture, tmp_path / "profile", height=9000)
    assert picture.stat().st_size > 10_000
    with_images = coloured_share(picture)

    # The same page with its images broken: only text, tables and broken-image icons.
    broken = tmp_path / "broken.html"
    broken.write_text(page.read_text().replace("data:image/png;base64,", "data:image/png;base64,x"))
    screenshot(broken, tmp_path / "broken.png", tmp_path / "profile", height=9000)
    assert with_images > 0.01
    assert with_images > 20 * coloured_share(tmp_path / "broken.png")
    assert np.isfinite(with_images)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_answer_is_on_the_first_screen_at_1280_pixels(tmp_path: Path) -> None:
    # The best sets with their intervals, then their fit to the data: a figure shows on the
    # first 1280 x 1000 screen, not below long tables.
    store = OutputStore(tmp_path / "out")
    write_folder(store, sets=20, replicates=5, series_points=60, ranking=True, targets=True,
                 sensitivity="sobol")  # fmt: skip
    page = Path(build_report(store))
    first_screen = tmp_path / "first.png"
    screenshot(page, first_screen, tmp_path / "profile", height=1000, width=1280)
    assert coloured_share(first_screen) > 0.003  # tables and text alone: ~0
