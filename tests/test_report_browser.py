"""The report as a user sees it: the real page in headless Chromium (Debian's ``chromium``, driven by
Playwright). Built from real records: the committed nightly baseline (reports/nightly-baseline/, a full run of what is now the nightly profile) and a
5,000-row report made from it. Skips, with the reason, where Chromium or Playwright is absent (`.ci/run`
installs Chromium)."""

from __future__ import annotations

import copy
import json
import shutil
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "reports" / "nightly-baseline"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium; "
                                                          ".ci/run does this)")


def _records(d: Path):
    return [json.loads(line) for line in (d / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The nightly baseline's report rebuilt here from its results.jsonl and environment.json."""
    from harness.report import write_report

    d = tmp_path_factory.mktemp("baseline-report")
    for name in ("results.jsonl", "environment.json"):
        shutil.copy(BASELINE / name, d / name)
    write_report(d)
    return d


def _open(browser, path: Path, width: int = 1400):
    page = browser.new_page(viewport={"width": width, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.perf_counter()
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, errors, time.perf_counter() - t0


def test_the_first_screen_answers_what_to_ship_per_target(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    assert errors == []
    recs = _records(report)
    rows = page.locator("#decide tbody tr")
    texts = [rows.nth(k).inner_text() for k in range(rows.count())]
    assert texts
    for target in ("onnxruntime-cpu\tfp32", "openvino-cpu\tfp32", "libtorch-cpp\tfp32"):
        row = next(t for t in texts if target.replace("\t", " ") in t.replace("\t", " "))
        assert "blocked" not in row and "p50" not in row.split("\n")[0]
        assert any(w in row for w in ("onnx op", "torchscript")), row
        assert "max abs" in row and "judged at atol" in row
    # a pick's safety notes are on its card: the nightly's fp16 ORT pick is slower than fp32 on this CPU
    ort16 = next(t for t in texts if "onnxruntime-cpu fp16" in t.replace("\t", " "))
    assert "do not ship: fp16 slower than fp32 here" in ort16 and "parity rule: passed by the fp16 drift-profile rule" in ort16
    # the decision table starts within the first screen (1400 x 900)
    top = page.locator("#decide").bounding_box()["y"]
    assert top < 900, top
    # every primary row names a config or says why nothing passes
    for t in texts:
        assert "blocked" in t or " op" in t or "torchscript" in t or "eager" in t or "aoti" in t or "executorch" in t, t
    n_targets = len({(r.get("model") or "bgmv2", r["runtime"], r["precision"]) for r in recs if r["status"] != "skip"})
    assert len(texts) == n_targets
    page.close()


def test_filter_and_search_narrow_the_table(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    recs = _records(report)
    total = len(recs)
    def count():
        return int(page.locator("#shown").inner_text().split(" of ")[0])

    assert page.locator("#shown").inner_text().startswith(f"{total} of {total} cells")
    page.select_option("#filters select[data-col=runtime]", "openvino-cpu")
    n_ov = sum(r["runtime"] == "openvino-cpu" for r in recs)
    assert count() == n_ov
    from collections import Counter

    st, n = Counter(r["status"] for r in recs if r["runtime"] == "openvino-cpu" and r["status"] != "pass").most_common(1)[0]
    page.select_option("#filters select[data-col=status]", st)
    assert count() == n == page.locator("#results tbody tr").count()
    assert set(page.locator(f"#results tbody td.{st}").all_inner_texts()) == {st}
    page.select_option("#filters select[data-col=status]", "")
    page.fill("#search", "fp16 sampling")
    page.wait_for_timeout(300)
    want = sum(r["runtime"] == "openvino-cpu" and r["precision"] == "fp16" and "sampling" in r["cell_id"] for r in recs)
    assert 0 < count() == want < n_ov
    # sorting puts empty values last, both ways
    page.select_option("#filters select[data-col=runtime]", "")
    page.fill("#search", "")
    page.wait_for_timeout(300)
    page.click("#results th[data-col=p50_ms]")
    page.click("#show-all") if page.locator("#show-all").is_visible() else None
    col = page.locator("#results tbody tr td:nth-child(15)").all_inner_texts()
    vals = [float(v) for v in col if v]
    assert vals == sorted(vals) and col[: len(vals)] == [c for c in col if c]
    assert errors == []
    page.close()


def test_a_grid_cell_opens_its_reason_on_click(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    recs = {r["cell_id"]: r for r in _records(report)}
    cell = page.locator("td.c.xfail[data-cell]").first
    cid = cell.get_attribute("data-cell")
    assert not page.locator("#inspector").is_visible()
    cell.click()
    text = page.locator("#inspector").inner_text()
    assert page.locator("#inspector").is_visible() and cid in text
    assert recs[cid]["reason"][:60] in text
    assert f"rule {recs[cid]['rule']}" in text
    links = page.locator("#inspector a")
    assert any((links.nth(k).get_attribute("href") or "").startswith("http") for k in range(links.count()))
    page.keyboard.press("Escape")
    assert not page.locator("#inspector").is_visible()
    assert errors == []
    page.close()


def test_nothing_is_wider_than_the_viewport_at_1400_px(browser, report):
    page, _, _ = _open(browser, report / "report.html", 1400)
    wide = page.evaluate("""() => { const vw = document.documentElement.clientWidth;
        return Array.from(document.querySelectorAll('body *')).filter(e => e.getBoundingClientRect().right > vw + 1)
          .slice(0, 5).map(e => e.tagName + '#' + e.id + ' ' + Math.round(e.getBoundingClientRect().right)); }""")
    assert wide == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400
    page.close()


def test_a_5000_row_report_loads_under_2_s_and_filters_under_200_ms(browser, report, tmp_path):
    from harness.report import write_report

    recs = _records(report)
    big = []
    k = 0
    while len(big) < 5000:
        for r in recs:
            c = copy.deepcopy(r)
            c["cell_id"] = f"{r['cell_id']}-r{k}"
            big.append(c)
            if len(big) == 5000:
                break
        k += 1
    shutil.copy(report / "environment.json", tmp_path / "environment.json")
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in big))
    write_report(tmp_path)
    page, errors, load_s = _open(browser, tmp_path / "report.html")
    assert errors == []
    assert page.locator("#shown").inner_text().startswith("5000 of 5000 cells")
    assert load_s < 2.0, f"load took {load_s:.2f} s"
    ms = page.evaluate("""() => { const s = document.querySelector('#filters select[data-col=runtime]');
        const t = performance.now(); s.value = 'onnxruntime-cpu'; s.dispatchEvent(new Event('change'));
        return performance.now() - t; }""")
    assert ms < 200, f"filter took {ms:.0f} ms"
    assert not page.locator("#shown").inner_text().startswith("5000 of")
    page.close()
