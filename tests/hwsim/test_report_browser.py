"""report.html in a real headless Chromium: it renders (title and heading), every image decodes, the console
stays clean; and the same checks catch a broken image and a console error."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from hwsim.report import build_report
from runtime.shapes import model_linears
from tests.browser import binaries, open_page

pytest.importorskip("selenium", reason="selenium not installed (pip install -e '.[dev]')")
_browser, _driver = binaries()
pytestmark = pytest.mark.skipif(not (_browser and _driver),
                                reason="chromium/chromedriver not installed (apt-get install -y chromium chromium-driver)")


class _Imgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def _img_srcs(html: str) -> list[str]:
    p = _Imgs()
    p.feed(html)
    p.close()
    return p.srcs


def _short(src: str) -> str:
    return src if len(src) <= 60 else f"{src[:60]}... ({len(src)} chars)"


def check_page(page, n_imgs: int) -> list[str]:
    """Every problem a reader would see, one line each; empty when the page is fine."""
    problems = []
    if not page.title.startswith("lowbit report"):
        problems.append(f"title is {page.title!r}")
    if not page.h1.startswith("lowbit cost report"):
        problems.append(f"<h1> is {page.h1!r}")
    if len(page.images) != n_imgs:
        problems.append(f"browser sees {len(page.images)} images, the file has {n_imgs} <img> tags")
    problems += [f"image did not load: {_short(s)}" for s in page.broken_images()]
    problems += [f"console error: {m}" for m in page.console_errors()]
    return problems


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "llama-tiny"
    build_report(model_linears("llama-tiny", "w4g64a8"), ["lut-tc", "mixpe", "mac"], out, prefill=16, platforms=("h100-sxm",), jobs=2)
    return out / "report.html"


def test_report_renders_in_chromium(report_html):
    n = len(_img_srcs(report_html.read_text()))
    assert n == 4  # roofline, layer time, area/energy, pareto
    page = open_page(report_html)
    assert check_page(page, n) == []
    assert all(i["naturalWidth"] >= 500 for i in page.images), [i["naturalWidth"] for i in page.images]


def test_checks_catch_broken_image_and_console_error(report_html, tmp_path):
    html = report_html.read_text()
    srcs = _img_srcs(html)
    bad = "data:image/png;base64,iVBORw0KGgo="  # the PNG signature alone: present, but does not decode
    broken = html.replace(srcs[1], bad, 1).replace("</body>", '<script>console.error("x")</script></body>', 1)
    assert broken != html
    copy = tmp_path / "report.html"
    copy.write_text(broken)
    page = open_page(copy)
    assert page.broken_images() == [bad]
    assert any('"x"' in m for m in page.console_errors()), page.console
    problems = check_page(page, len(_img_srcs(broken)))
    assert f"image did not load: {bad}" in problems
    assert any(p.startswith("console error:") and '"x"' in p for p in problems)
