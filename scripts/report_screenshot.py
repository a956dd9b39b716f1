"""Full-page screenshot of a `lowbit report` as headless Chromium renders it (docs/report-screenshot.png).

    .venv/bin/python scripts/report_screenshot.py                      # builds `lowbit report llama-1b` in a temp folder
    .venv/bin/python scripts/report_screenshot.py --html out/report-llama-1b/report.html

Fails (exit 1) when an image does not load or the console shows an error: a screenshot of a broken page is not
one for the docs. Needs chromium and chromedriver (scripts/setup.sh installs them)."""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import open_page  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--html", type=Path, help="an existing report.html [build one for --model]")
    ap.add_argument("--model", default="llama-1b")
    ap.add_argument("--designs", default="lut-tc,mixpe,mac")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "report-screenshot.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=16000)
    ap.add_argument("--colors", type=int, default=256, help="palette size of the PNG (0: keep full colour); keeps the file small")
    a = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        html = a.html
        if html is None:
            from runtime.cli import main as lowbit

            rep = Path(tmp) / "report"
            # this-cpu's roofline depends on the machine that makes the picture; h100-sxm does not
            lowbit(["report", a.model, "--designs", a.designs, "--platforms", "h100-sxm", "-o", str(rep)])
            html = rep / "report.html"
        page = open_page(html, width=a.width, screenshot=True, max_height=a.max_height)
    problems = [f"image did not load: {s[:60]}" for s in page.broken_images()] + [f"console error: {m}" for m in page.console_errors()]
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    from PIL import Image  # matplotlib's own dependency

    im = Image.open(io.BytesIO(page.png))
    png = page.png
    if a.colors:
        buf = io.BytesIO()
        im.quantize(colors=a.colors).save(buf, format="PNG", optimize=True)
        png = buf.getvalue()
    a.out.write_bytes(png)
    w, h = im.size
    print(f"wrote {a.out} ({w}x{h}, {len(png) / 1024:.0f} KiB; {len(page.images)} images loaded, no console errors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
