"""The Dagster UI's main pages after a short demo, screenshotted in headless Chromium (ui_screenshots.py).

UI_SCREENSHOTS_OUT names a folder to keep the PNGs in (CI keeps them for a person to look at).
"""

import os
import re
from pathlib import Path

import pytest
from PIL import Image

from segmentation_pipeline_tests.ui_screenshots import LAST_DAY, PAGES, WINDOW, chromium, take_screenshots


@pytest.mark.skipif(chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_every_main_page_renders_what_the_demo_made(tmp_path: Path) -> None:
    out = Path(os.environ.get("UI_SCREENSHOTS_OUT") or tmp_path / "shots")
    shots = take_screenshots(out, tmp_path / "work", chromium())
    assert set(shots) == {page.name for page in PAGES}
    for page in PAGES:
        with Image.open(shots[page.name]) as picture:
            assert picture.size == WINDOW, page.name
            colours = picture.convert("RGB").getcolors(maxcolors=1_000_000)
        # Not blank: text and widgets in many shades, no one colour covering the whole window.
        assert len(colours) > 100, page.name
        assert max(count for count, _ in colours) < 0.97 * WINDOW[0] * WINDOW[1], page.name
        text = re.sub(r"<[^>]+>", " ", (out / f"{page.name}.html").read_text())
        text = re.sub(r"\s+", " ", text.replace("<!-- -->", ""))
        for expected in page.expect:
            assert expected in text, (page.name, expected)
    # `make dev`'s command logged no warning (Dagster's known, harmless ones are silenced).
    log = (tmp_path / "work" / "dagster_dev.log").read_text()
    assert "Warning" not in log and "warnings.warn" not in log, log[-3000:]
    # The partitions end on the demo's last day (SEGMENTATION_END_DATE), every one of them filled.
    partitions = (out / "asset_partitions.html").read_text()
    assert LAST_DAY in partitions and "2025-01-06" not in partitions
