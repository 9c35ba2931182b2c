"""Screenshots of the top of a report at 1,400 and 390 px wide (headless Debian Chromium via Playwright).

    python benchmarks/report_screenshots.py reports/baseline [--out reports]

Rebuilds DIR's report from its results.jsonl into a temporary folder (DIR is left as it is) and writes
``screenshot-1400.png`` and ``screenshot-390.png`` (900 px tall: the first screen) into ``--out``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--out", default="reports")
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    from harness.report import write_report

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("results.jsonl", "environment.json"):
            if (Path(a.dir) / name).is_file():
                shutil.copy(Path(a.dir) / name, Path(tmp) / name)
        write_report(Path(tmp))
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=ARGS)
            for width in (1400, 390):
                page = b.new_page(viewport={"width": width, "height": 900})
                page.goto((Path(tmp) / "report.html").as_uri())
                page.wait_for_load_state("load")
                out = Path(a.out) / f"screenshot-{width}.png"
                page.screenshot(path=str(out))
                print(out)
                page.close()
            b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
