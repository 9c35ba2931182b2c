"""The report as a user sees it: the real page in headless Chromium (Debian's ``chromium``, driven by
Playwright). Built from real records: the committed nightly baseline (reports/nightly-baseline/, a full run of
what is now the nightly profile, both models), the ci baseline compared with a copy of itself with one cell
broken (the "changed since baseline" box), and a 5,000-row report made from the nightly one. Skips, with the
reason, where Chromium or Playwright is absent (`.ci/run` installs Chromium)."""

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


def _primary_targets(recs):
    return {(r.get("model") or "bgmv2", r["runtime"], r["precision"]) for r in recs if r["status"] != "skip"}


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
    # every primary row names a config or says why nothing passes
    for t in texts:
        assert "blocked" in t or " op" in t or "torchscript" in t or "eager" in t or "aoti" in t or "executorch" in t, t
    assert len(texts) == len(_primary_targets(recs))
    page.close()


def test_every_pick_of_every_model_is_on_the_first_screen(browser, report):
    """At 1400 x 900, without scrolling: one card per (model, runtime, precision) that ran, grouped per model,
    each naming its config, p50, accuracy and the benchmark numbers, or why it is blocked."""
    page, errors, _ = _open(browser, report / "report.html")
    recs = _records(report)
    want = _primary_targets(recs)
    assert {m for m, _, _ in want} == {"bgmv2", "rvm"}  # the fixture has both models
    cards = page.locator("#what-to-ship .card")
    assert cards.count() == len(want) == 19
    for m in {m for m, _, _ in want}:
        n = page.locator(f"#picks-{m} .card").count()
        assert n == sum(t[0] == m for t in want), m
    for k in range(cards.count()):
        box = cards.nth(k).bounding_box()
        assert box["y"] >= 0 and box["y"] + box["height"] <= 900, (k, cards.nth(k).inner_text()[:80], box)
        text = cards.nth(k).inner_text()
        if "blocked" in text:
            assert "×" in text, text
            continue
        for word in (" ms", "max abs", "atol", "fps", "cold", "artifact", "peak RSS", "measured"):
            assert word in text, (word, text)
    # OpenVINO says what it computed in: its cards name the execution precision
    ov = page.locator("#pick-bgmv2-openvino-cpu-fp32").inner_text()
    assert "exec fp32" in ov or "exec bf16" in ov, ov
    assert errors == []
    page.close()


def test_filter_and_search_narrow_the_table(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    recs = _records(report)
    total = len(recs)
    def count():
        return int(page.locator("#shown").inner_text().split(" of ")[0])

    ran = [r for r in recs if r["status"] != "skip"]
    assert page.locator("#shown").inner_text().startswith(f"{len(ran)} of {total} cells")
    page.select_option("#filters select[data-col=runtime]", "openvino-cpu")
    n_ov = sum(r["runtime"] == "openvino-cpu" for r in ran)
    assert count() == n_ov
    from collections import Counter

    st, n = Counter(r["status"] for r in recs if r["runtime"] == "openvino-cpu" and r["status"] != "pass").most_common(1)[0]
    page.select_option("#filters select[data-col=status]", st)
    assert count() == n == page.locator("#results tbody tr").count()
    assert set(page.locator(f"#results tbody td.{st}").all_inner_texts()) == {st}
    page.select_option("#filters select[data-col=status]", "")
    page.fill("#search", "fp16 sampling")
    page.wait_for_timeout(300)
    want = sum(r["runtime"] == "openvino-cpu" and r["precision"] == "fp16" and "sampling" in r["cell_id"] for r in ran)
    assert 0 < count() == want < n_ov
    # sorting puts empty values last, both ways
    page.select_option("#filters select[data-col=runtime]", "")
    page.fill("#search", "")
    page.wait_for_timeout(300)
    page.click("#results th[data-col=p50_ms]")
    page.click("#show-all") if page.locator("#show-all").is_visible() else None
    nth = page.evaluate("Array.from(document.querySelectorAll('#results thead th')).findIndex(t => t.dataset.col === 'p50_ms') + 1")
    col = page.locator(f"#results tbody tr td:nth-child({nth})").all_inner_texts()
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


# Tokens (whitespace-separated words and numbers) that wrap onto two lines: a Range per token, its client
# rects on more than one line, then the characters either side of the break. A word never breaks between two
# letters or digits ("onnxruntim|e"); a compound may wrap at its own punctuation ("data-|dependent", a URL at
# "/", code at "](" ); a number, a ratio, a range, a status or a runtime or exporter name never wraps at all
# ("onnxruntime-|cpu", "38/5|4", "2.|6e-|06" were the bugs). Tokens longer than 32 characters (cell ids, URLs,
# paths: wider than any column) are left out; so are the hidden inspector, scripts and closed <details> (laid
# out, not shown).
SPLIT_TOKENS_JS = """(names) => {
  const strict = new Set(names), out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT), range = document.createRange();
  const top = (node, i, j) => { range.setStart(node, i); range.setEnd(node, j);
    const r = Array.from(range.getClientRects()).filter(r => r.width > 0); return r.length ? Math.round(r[0].top) : null; };
  let node, checked = 0;
  while ((node = walker.nextNode())) {
    const el = node.parentElement;
    if (!el || el.closest('script, style, #inspector, noscript')) continue;
    const det = el.closest('details:not([open])');
    if (det && !el.closest('summary')) continue;
    if (!el.getClientRects().length) continue;
    const text = node.textContent, re = /\\S+/g;
    let m;
    while ((m = re.exec(text))) {
      const tok = m[0];
      if (tok.length > 32) continue;
      checked++;
      range.setStart(node, m.index); range.setEnd(node, m.index + tok.length);
      const tops = new Set(Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (tops.size < 2) continue;
      const first = top(node, m.index, m.index + 1);
      let at = 1;
      while (at < tok.length && top(node, m.index + at, m.index + at + 1) === first) at++;
      const bare = tok.replace(/^[(\\[]+|[)\\],;:.]+$/g, '');
      const hard = strict.has(bare) || /^[-+]?[\\d.,:%x–\\/e+-]+$/.test(bare) && /\\d/.test(bare);
      const alnum = c => /[\\p{L}\\p{N}]/u.test(c || '');
      if (hard || (alnum(tok[at - 1]) && alnum(tok[at])))
        out.push(tok.slice(0, at) + '|' + tok.slice(at) + ' in ' + el.tagName.toLowerCase() + '.' + el.className);
    }
  }
  return {checked, split: out.slice(0, 10), n: out.length};
}"""


def _names(recs):
    """Runtime, exporter and status names of the records: tokens that must never wrap."""
    return sorted({str(r.get(k)) for r in recs for k in ("runtime", "exporter", "status") if r.get(k)})


def test_no_word_or_number_is_split_across_lines_at_1400_px(browser, report):
    """'onnxruntim e-cpu', '38/5 4', '2. 6e -0 6' were what overflow-wrap: anywhere did to the auto-width
    tables. Mutant: that CSS put back on the All-cells table must be caught by the same check."""
    page, errors, _ = _open(browser, report / "report.html")
    names = _names(_records(report))
    res = page.evaluate(SPLIT_TOKENS_JS, names)
    assert res["checked"] > 20000 and res["split"] == [], res
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")  # reasons, other shapes
    res = page.evaluate(SPLIT_TOKENS_JS, names)
    assert res["checked"] > 40000 and res["split"] == [], res
    page.add_style_tag(content="#results td, #results th { overflow-wrap: anywhere !important; white-space: normal !important; }"
                               " #results td.reason { min-width: 0 !important; max-width: none !important; }")
    mutant = page.evaluate(SPLIT_TOKENS_JS, names)
    assert mutant["n"] > 0, mutant
    assert errors == []
    page.close()


def test_narrow_tables_of_a_small_run_split_no_word_either(browser, tmp_path):
    """One model's cells only (the ci baseline's 52 RVM cells): few rows, narrow tables, where a number in a
    short cell wrapped at its exponent ('7.77e-|05')."""
    from harness.report import write_report

    recs = [r for r in _records(ROOT / "reports" / "baseline") if r.get("model") == "rvm"]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    shutil.copy(ROOT / "reports" / "baseline" / "environment.json", tmp_path / "environment.json")
    write_report(tmp_path)
    page, errors, _ = _open(browser, tmp_path / "report.html")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    res = page.evaluate(SPLIT_TOKENS_JS, _names(recs))
    assert res["checked"] > 3000 and res["split"] == [], res
    assert errors == []
    page.close()


def test_no_none_nan_or_machine_path_in_the_visible_text(browser, report):
    """No label built from a missing value ('None None None/None op12 fp32'), no NaN, and no absolute path of
    the machine that ran (every <details> opened: reasons included)."""
    import re

    page, _, _ = _open(browser, report / "report.html")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    page.check("#show-skip")
    page.click("#show-all")
    text = page.evaluate("document.body.innerText")
    # ("NaN/Inf" is the name of a check in the parity rule's words, not a missing value)
    assert re.findall(r".{0,40}\b(?:None|nan|NaN|undefined)\b(?!/Inf).{0,20}", text) == []
    assert re.findall(r".{0,30}(?:/work/|/home/|/root/|/tmp/|site-packages).{0,30}", text) == []
    # the readiness rows name each model's own knobs: RVM's 23 ONNX files of the ci run are 23 rows here too
    rvm_rows = page.locator("#readiness-table tr", has=page.locator("td:first-child", has_text="rvm"))
    recs = _records(report)
    assert rvm_rows.count() == len({r["artifact_key"] for r in recs if r.get("model") == "rvm" and r.get("onnx_nodes") is not None})
    page.close()


def test_the_contents_links_scroll_their_section_into_view(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    links = page.locator("#toc a")
    hrefs = [links.nth(k).get_attribute("href") for k in range(links.count())]
    for want in ("#what-to-ship", "#why", "#failures", "#targets", "#charts", "#readiness", "#grids", "#all-cells",
                 "#definitions"):
        assert want in hrefs, (want, hrefs)
    for k, href in enumerate(hrefs):
        assert page.locator(href).count() == 1, href
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        links.nth(k).click()
        page.wait_for_timeout(50)
        top = page.evaluate(f"document.querySelector('{href}').getBoundingClientRect().top")
        assert -2 <= top < 900 / 2, (href, top)
        page.evaluate("window.scrollTo(0, 0)")
    # every section heading leads back to the contents
    page.locator("#grids a.up").click()
    assert page.evaluate("document.getElementById('toc').getBoundingClientRect().top") >= 0
    assert errors == []
    page.close()


def test_the_inspector_shows_every_value_it_labels(browser, report):
    """A passing OpenVINO cell: each label with its value from the record (p50, fps, cold, artifact, RSS, calls,
    exec precision); a cell that never ran its latency stage: no latency label at all; never an empty label."""
    import re

    page, errors, _ = _open(browser, report / "report.html")
    recs = {r["cell_id"]: r for r in _records(report)}
    ov = next(r for r in recs.values() if r["runtime"] == "openvino-cpu" and r["status"] == "pass"
              and r.get("fps") and r.get("cold_ms"))
    page.fill("#search", ov["cell_id"])
    page.wait_for_timeout(200)
    page.locator(f"#results tbody tr[data-cell='{ov['cell_id']}'] td.w").first.click()
    lines = page.locator("#inspector-body div").all_inner_texts()
    text = "\n".join(lines)
    info = json.loads(ov["runtime_info"])
    want = {"fps": f"{ov['fps']:.1f}", "cold": f"{ov['cold_ms']:.1f} ms", "artifact": f"{ov['artifact_mib']:.1f} MiB",
            "peak RSS": f"{ov['worker_max_rss_mib']} MiB", "measured": f"{ov['latency_runs']} calls",
            "exec": {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[info["inference_precision"]]}
    for label, value in want.items():
        assert any(ln.startswith(f"{label}: ") and value in ln for ln in lines), (label, value, text)
    assert any(ln.startswith("p50: ") and f"{ov['p50_ms']:.1f} ms" in ln for ln in lines), text
    for ln in lines:  # no label without its value, no unit without its number
        assert not re.search(r"(^|\s)\w[\w ]*:\s*$|\s{2}|\b(?:None|nan)\b|\(\)", ln), ln
        if not ln.startswith(("parity:", "reason:", "rule ", "not ready for:", "runtime info:", "input contract:")):
            for before in re.findall(r"(\S*)\s+(?:ms|s|MiB)\b", ln):
                assert before[-1:].isdigit(), (before, ln)
    page.keyboard.press("Escape")
    xf = next(r for r in recs.values() if r["status"] == "xfail" and r.get("p50_ms") is None)
    page.fill("#search", xf["cell_id"])
    page.wait_for_timeout(200)
    page.locator(f"#results tbody tr[data-cell='{xf['cell_id']}'] td.w").first.click()
    xlines = page.locator("#inspector-body div").all_inner_texts()
    assert not [ln for ln in xlines if re.match(r"(p50|fps|cold|measured|spread):", ln)], xlines
    assert any(ln.startswith("reason: ") for ln in xlines)
    assert errors == []
    page.close()


def test_a_pick_links_to_its_cell_and_the_cell_back_to_the_pick(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    card = page.locator("#pick-rvm-onnxruntime-cpu-fp32")
    link = card.locator("a.jump")
    cid = link.get_attribute("data-cell")
    link.click()
    row = page.locator(f"[id='row-{cid}']")
    assert row.is_visible() and "hit" in (row.get_attribute("class") or "")
    box = row.bounding_box()
    assert 0 <= box["y"] < 900, box
    assert page.locator("#inspector").is_visible() and cid in page.locator("#inspector").inner_text()
    back = row.locator("a.back")
    assert back.count() == 1 and "rvm onnxruntime-cpu fp32" in back.inner_text()
    back.click()
    page.wait_for_timeout(50)
    assert page.evaluate("location.hash") == "#pick-rvm-onnxruntime-cpu-fp32"
    cbox = card.bounding_box()
    assert -1 <= cbox["y"] < 900, cbox  # scrolled to the top: sub-pixel offsets round either way
    assert not page.locator("#inspector").is_visible()
    # every card's cell is a row that links back to that card
    links = page.locator("#what-to-ship .card a.jump[data-cell]")
    picks = json.loads(page.locator("#cell-data").text_content())["picks"]
    for k in range(links.count()):
        a = links.nth(k)
        if a.inner_text().startswith("its cell"):
            card_id = a.evaluate("e => e.closest('.card').id")
            assert [card_id] == [p[0] for p in picks[a.get_attribute("data-cell")] if p[0] == card_id]
    assert errors == []
    page.close()


def test_skip_rows_are_hidden_until_asked_for(browser, report):
    page, errors, _ = _open(browser, report / "report.html")
    recs = _records(report)
    n_skip = sum(r["status"] == "skip" for r in recs)
    assert n_skip > 300
    assert page.locator("#results tbody td.skip").count() == 0
    assert f"{n_skip} skip hidden" in page.locator("#shown").inner_text()
    page.check("#show-skip")
    assert page.locator("#shown").inner_text().startswith(f"{len(recs)} of {len(recs)} cells")
    page.uncheck("#show-skip")
    page.select_option("#filters select[data-col=status]", "skip")  # asking for skip shows them
    assert page.locator("#shown").inner_text().startswith(f"{n_skip} of {len(recs)} cells")
    assert page.locator("#results tbody td.skip").count() == min(n_skip, 300)
    assert errors == []
    page.close()


def test_the_search_box_is_a_few_tab_stops_from_the_top(browser, report):
    """Not behind hundreds of grid cells: the find box sits in the contents bar; Enter shows the matches."""
    page, errors, _ = _open(browser, report / "report.html")
    focusable = page.evaluate("document.querySelectorAll('a[href], input, select, button, [tabindex]').length")
    assert focusable > 500  # what the search box used to sit behind
    for presses in range(1, 41):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "quick-search":
            break
    else:
        raise AssertionError("the find box is more than 40 tab stops from the top")
    assert presses <= 20, presses
    page.keyboard.type("rvm onnx-dynamo")
    page.keyboard.press("Enter")
    page.wait_for_timeout(200)
    want = sum(r["status"] != "skip" and "rvm" in r["cell_id"] and "onnx-dynamo" in r["cell_id"] for r in _records(report))
    assert page.locator("#shown").inner_text().startswith(f"{want} of ")
    assert page.locator("#quick-count").inner_text().startswith(f"{want} match")
    top = page.evaluate("document.getElementById('all-cells').getBoundingClientRect().top")
    first = page.locator("#results tbody tr").first.bounding_box()
    assert -2 <= top < 900 and 0 <= first["y"] < 900, (top, first)  # scrolled there (as far as the page goes)
    assert errors == []
    page.close()


def test_a_run_compared_with_a_baseline_opens_with_what_changed(browser, tmp_path):
    """The ci baseline against a copy of itself with one passing cell failing parity: the box names the
    regression, links the cell, and the picks stay on the first screen. A diff.json of other records (an
    earlier run in the same folder) shows no box."""
    from harness.diff import diff_records, write
    from harness.report import write_report

    base_dir = ROOT / "reports" / "baseline"
    recs = _records(base_dir)
    env = json.loads((base_dir / "environment.json").read_text())
    broken = next(r for r in recs if r["status"] == "pass" and r["runtime"] == "openvino-cpu")
    new = [dict(r, status="fail", stage="parity", reason="parity: outside tolerance (injected)")
           if r is broken else r for r in recs]
    out = tmp_path / "new"
    out.mkdir()
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in new))
    shutil.copy(base_dir / "environment.json", out / "environment.json")
    write(diff_records(recs, new, env, env, base_name="reports/baseline", new_name=str(out)), out)
    write_report(out)
    page, errors, _ = _open(browser, out / "report.html")
    box = page.locator("#changed")
    assert box.is_visible() and box.bounding_box()["y"] < 200
    text = box.inner_text()
    assert "REGRESSION" in text and "new failures 1" in text and "reports/baseline" in text, text
    assert page.locator("#toc a[href='#changed']").count() == 1
    box.locator("summary").click()
    box.locator(f"a[data-cell='{broken['cell_id']}']").click()
    assert page.locator(f"[id='row-{broken['cell_id']}']").is_visible()
    cards = page.locator("#what-to-ship .card")
    page.evaluate("window.scrollTo(0, 0)")
    for k in range(cards.count()):
        b = cards.nth(k).bounding_box()
        assert b["y"] + b["height"] <= 900, (k, b)
    assert errors == []
    page.close()
    # the same diff.json beside other records (the next run in that folder) is not shown
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    write_report(out)
    assert 'id="changed"' not in (out / "report.html").read_text()


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
    n_ran = sum(r["status"] != "skip" for r in big)
    assert page.locator("#shown").inner_text().startswith(f"{n_ran} of 5000 cells")
    assert load_s < 2.0, f"load took {load_s:.2f} s"
    ms = page.evaluate("""() => { const s = document.querySelector('#filters select[data-col=runtime]');
        const t = performance.now(); s.value = 'onnxruntime-cpu'; s.dispatchEvent(new Event('change'));
        return performance.now() - t; }""")
    assert ms < 200, f"filter took {ms:.0f} ms"
    assert not page.locator("#shown").inner_text().startswith(f"{n_ran} of")
    page.close()
