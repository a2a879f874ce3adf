"""Report: Table 6.2 layout, curve files, self-contained HTML rendered in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
from PIL import Image

from advimage.bench.metrics import operating_curve, summarize
from advimage.bench.report import (
    GalleryItem,
    amplify_perturbation,
    data_uri,
    example_item,
    png_bytes,
    table_markdown,
    table_rows,
    write_report,
)


def synthetic(model, attack, lam, acc, n=200, seed=0, quantizer="none", seconds=0.25):
    rng = np.random.default_rng(seed)
    c = operating_curve(rng.exponential(1 / lam, n), rng.random(n) < 0.98, rng.random(n) > acc)
    return summarize(c, model=model, attack=attack, quantizer=quantizer, seconds_per_image=seconds), c


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    entries = [synthetic("resnet50", "bp", 7.0, 0.78, seed=1),
               synthetic("resnet50", "bp", 5.0, 0.78, seed=2, quantizer="round"),
               synthetic("resnet50", "surfree", 0.3, 0.78, seed=3, seconds=4.0),
               synthetic("vit/b-16 <x>", "bp", 4.0, 0.81, seed=4)]
    summaries = [s for s, _ in entries]
    curves = {s.key: c for s, c in entries}
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    xa = np.clip(x0.astype(int) + rng.integers(-2, 3, x0.shape), 0, 255).astype(np.uint8)
    gallery_file = run_dir / "example.png"
    gallery_file.write_bytes(png_bytes(x0))
    gallery = [example_item("ILSVRC2012_val_00000001, d = 1.2", x0, xa,
                            original_class="tabby cat", adversarial_class="tiger cat"),
               ("from a file", gallery_file)]
    files = write_report(run_dir, summaries, curves, gallery, params_millions={"resnet50": 25.557},
                         black_box_attacks={"surfree"})
    return files, summaries


def test_table_layout(report):
    files, summaries = report
    rows = table_rows(summaries, black_box_attacks={"surfree"}, params_millions={"resnet50": 25.557})
    assert [r.model for r in rows] == ["resnet50", "vit/b-16 <x>"]
    r = rows[0]
    # white box is the worst case over the two quantizers of bp, by the empirical d½
    bp = [s for s in summaries if s.model == "resnet50" and s.attack == "bp"]
    worst = min(bp, key=lambda s: s.d_half_empirical)
    assert r.d_half_empirical_white == worst.d_half_empirical
    assert r.d_half_white == worst.d_half_fit and r.r2_white == worst.r2
    assert r.d_half_black == summaries[2].d_half_fit and r.seconds_black == 4.0
    assert r.d_half_empirical_black == summaries[2].d_half_empirical
    assert rows[1].d_half_black is None and rows[1].params_millions is None

    md = files.table_md.read_text()
    assert md == table_markdown(rows)
    lines = md.splitlines()
    assert lines[0] == ("| Model | Parameters (millions) | Accuracy η(0) (%) | d½ empirical, white box "
                        "| d½ empirical, black box | d½ fit (white / black) | R² of fit (white / black) "
                        "| s/image (white / black) |")
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[:3] == ["resnet50", "25.56", f"{100 * summaries[0].accuracy:.1f}"]
    assert cells[3] == f"{r.d_half_empirical_white:.2f}" and cells[4] == f"{r.d_half_empirical_black:.2f}"
    assert cells[5] == f"{r.d_half_white:.2f} / {r.d_half_black:.2f}"
    assert cells[6] == f"{r.r2_white:.3f} / {r.r2_black:.3f}" and cells[7] == "0.25 / 4"
    assert lines[3].split("|")[5].strip() == "–"  # no black-box attack on the second model

    with open(files.table_csv, newline="") as f:
        got = list(csv.DictReader(f))
    assert float(got[0]["d_half_white"]) == pytest.approx(r.d_half_white)
    assert float(got[0]["d_half_empirical_white"]) == pytest.approx(r.d_half_empirical_white)
    assert got[0]["attack_white"] in ("bp", "bp (round)") and got[1]["d_half_black"] == ""
    with open(files.summaries_csv, newline="") as f:
        det = list(csv.DictReader(f))
    assert len(det) == 4 and {"success_at_0.5", "success_at_1", "success_at_2"} <= set(det[0])


def test_worst_case_is_the_smallest_empirical_d_half():
    # a long tail pulls the fit far out (d½ fit 1.03) while half the images are fooled by 0.57;
    # a steep step has the larger empirical d½ (0.60) but the smaller fitted one (0.58)
    tail = summarize(operating_curve(np.r_[np.linspace(0.4, 0.6, 60), np.linspace(5, 10, 40)], np.ones(100, bool)),
                     model="m", attack="tail")
    step = summarize(operating_curve(np.linspace(0.5, 0.7, 100), np.ones(100, bool)), model="m", attack="step")
    assert tail.d_half_empirical < step.d_half_empirical and tail.d_half_fit > step.d_half_fit  # the premise
    (row,) = table_rows([step, tail])
    assert row.attack_white == "tail" and row.d_half_empirical_white == tail.d_half_empirical
    assert row.d_half_white == tail.d_half_fit and row.r2_white == tail.r2


def test_degenerate_summaries_render(tmp_path):
    none = summarize(operating_curve([0.0, 0.0], [False, False]), model="m", attack="a")
    allmis = summarize(operating_curve([0.0], [True], [True]), model="m2", attack="a")
    files = write_report(tmp_path, [none, allmis], {}, [])
    md = files.table_md.read_text()
    assert "| m | – | 100.0 | ∞ | – | ∞ / – |" in md and "| m2 | – | 0.0 | – | – | – / – |" in md
    assert files.curves == {} and "<img" not in files.html.read_text()


def test_curve_files(report):
    files, _ = report
    assert set(files.curves) == {("resnet50", "bp"), ("resnet50", "surfree"), ("vit/b-16 <x>", "bp")}
    for png, svg in files.curves.values():
        assert png.parent == files.html.parent / "curves" and "<" not in png.name and "/" not in png.stem
        with Image.open(png) as im:
            assert im.size == (640, 420)
            a = np.asarray(im.convert("L"))
        assert a.min() < 100 and a.max() > 200  # not blank
        text = svg.read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text
    # the bp plot overlays the two quantizers: two measured curves, two fits, two d½ markers
    assert files.curves[("resnet50", "bp")][1].read_text().count("d½=") == 2


def test_html_is_self_contained(report):
    files, summaries = report
    doc = files.html.read_text()
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]+)"', doc)
    assert len(srcs) == 3 + 3 + 1  # 3 curves, one example of 3 panels, one plain image
    for s in srcs:
        assert s.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) as im:
            im.verify()
    assert not re.search(r'(src|href)="(?!data:)', doc) and "url(" not in doc and "<link" not in doc
    assert "vit/b-16 &lt;x&gt;" in doc and "<x>" not in doc  # escaped
    for text in ("original: tabby cat", "adversarial: tiger cat", "perturbation ×", "25.56"):
        assert text in doc


def test_gallery_helpers():
    x0 = np.full((3, 4, 5), 100, np.uint8)
    xa = x0.copy()
    xa[0, 0, 0] = 102
    xa[1, 1, 1] = 99
    pert, gain = amplify_perturbation(x0, xa)  # CHW accepted, HWC returned
    assert pert.shape == (4, 5, 3) and gain == pytest.approx(63.5)
    assert pert[0, 0, 0] == 255 and pert[1, 1, 1] == 64 and pert[2, 2, 2] == 128
    assert amplify_perturbation(x0, x0)[1] == 1.0
    item = example_item("t", x0, xa, original_class="a", adversarial_class="b", gain=10)
    assert isinstance(item, GalleryItem) and [c for c, _ in item.panels] == ["original: a", "adversarial: b",
                                                                            "perturbation ×10"]
    assert data_uri(png_bytes(x0)).startswith("data:image/png;base64,")
    with pytest.raises(ValueError, match="PNG, JPEG or SVG"):
        data_uri(b"GIF89a")
    with pytest.raises(ValueError, match="differ in shape"):
        amplify_perturbation(x0, xa[:, :2])


def _chromium() -> str | None:
    for name in (os.environ.get("ADVIMAGE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome",
                 "google-chrome-stable", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHECK = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.getBoundingClientRect().width > 0);
  const t = document.querySelector('table.summary');
  const b = document.body.dataset;
  b.imgTotal = imgs.length; b.imgOk = ok.length;
  b.imgSizes = ok.map(i => i.naturalWidth + 'x' + i.naturalHeight).join(',');
  b.tableRows = t ? t.tBodies[0].rows.length : -1;
  b.tableCols = t ? t.tHead.rows[0].cells.length : -1;
  b.tableHeight = t ? Math.round(t.getBoundingClientRect().height) : 0;
  b.firstCell = t ? t.tBodies[0].rows[0].cells[0].textContent : '';
  const d = document.querySelector('table.detail');
  const box = d ? d.parentElement.getBoundingClientRect() : null;
  b.detailRight = d ? Math.round(d.getBoundingClientRect().right) : -1;
  b.detailBoxRight = box ? Math.round(box.right) : -1;
  b.pageWidth = document.documentElement.scrollWidth;
  b.viewWidth = window.innerWidth;
  b.checked = 'yes';
});
</script>"""


def test_html_renders_in_headless_chromium(report, tmp_path):
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (apt-get install -y chromium, or set ADVIMAGE_CHROMIUM)")
    files, _ = report
    page = tmp_path / "check.html"  # the report itself, with the check script injected
    page.write_text(files.html.read_text().replace("</body>", CHECK + "</body>"))
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--virtual-time-budget=5000",
               "--window-size=1400,900",
               "--dump-dom", page.as_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", out.stdout)
    assert body, out.stdout[:500]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("checked") == "yes", out.stdout[:500]
    assert attrs["img-total"] == "7" and attrs["img-ok"] == "7"
    sizes = attrs["img-sizes"].split(",")
    assert sizes.count("640x420") == 3 and sizes.count("32x24") == 4
    assert attrs["table-rows"] == "2" and attrs["table-cols"] == "8" and int(attrs["table-height"]) > 40
    assert attrs["first-cell"] == "resnet50"
    # at 1400 px the per-attack table fits its column (wrapping, or scrolling inside its box)
    assert int(attrs["detail-right"]) <= int(attrs["detail-box-right"]) + 1
    assert int(attrs["page-width"]) <= int(attrs["view-width"])


def test_unquantized_reference_curve(tmp_path):
    """The attack's floats are drawn for reference and listed, never used by Table 6.2."""
    rng = np.random.default_rng(5)
    floats = rng.exponential(0.1, 50)
    c_img = operating_curve(floats * 1.7, np.ones(50, bool))
    c_float = operating_curve(floats, np.ones(50, bool))
    s = summarize(c_img, model="m", attack="bp", quantizer="smart", unquantized=c_float)
    files = write_report(tmp_path, [s], {s.key: c_img}, [], unquantized={s.key: c_float})
    svg = files.curves[("m", "bp")][1].read_text()
    assert "bp before quantization (floats)" in svg and svg.count("d½=") == 2
    assert s.d_half_unquantized < s.d_half_fit
    (row,) = table_rows([s])
    assert row.d_half_white == s.d_half_fit
    with open(files.summaries_csv, newline="") as f:
        (det,) = list(csv.DictReader(f))
    assert float(det["d_half_unquantized"]) == pytest.approx(s.d_half_unquantized)
    assert float(det["r2_unquantized"]) == pytest.approx(s.r2_unquantized)
    assert "of floats before quantization" in files.html.read_text()
