"""Headless-browser screenshots of a summary.html, to look at it the way a person would.

    .venv/bin/python benchmarks/screenshots.py [reports/latest/summary.html] [--out DIR]
        [--widths 1280,1920] [--height 900]

For each width: the top of the page (one screen) and the whole page (a window --full px
tall: headless Chromium's --screenshot ignores a #anchor, so the heat maps and the summary
table are cut from this one), as PNGs in --out (default /tmp/parity-screenshots). Needs a
chromium (or chromium-browser / google-chrome) on PATH;
without one it says so and exits 0. Not a test: the tests read the HTML structure and never
need a browser.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# The screen height that goes with each width (a laptop, a desktop monitor).
HEIGHTS = {1280: 800, 1366: 768, 1440: 900, 1920: 1080}


def browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def shoot(exe: str, url: str, png: Path, width: int, height: int) -> None:
    subprocess.run(
        [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={png}", f"--window-size={width},{height}", url,
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("page", nargs="?", default="reports/latest/summary.html")
    p.add_argument("--out", default="/tmp/parity-screenshots")
    p.add_argument("--widths", default="1280,1920")
    p.add_argument("--height", type=int, default=0, help="screen height (default: by width)")
    p.add_argument("--full", type=int, default=16000, help="the whole-page shot's height in px")
    args = p.parse_args(argv)
    exe = browser()
    if exe is None:
        print("no chromium on PATH (apt-get install chromium): no screenshots taken")
        return 0
    page = Path(args.page).resolve()
    if not page.is_file():
        print(f"{page}: no such page", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for width in (int(w) for w in args.widths.split(",")):
        height = args.height or HEIGHTS.get(width, round(width * 9 / 16))
        for name, tall in (("top", height), ("full", args.full)):
            png = out / f"{name}-{width}.png"
            shoot(exe, page.as_uri(), png, width, tall)
            print(png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
