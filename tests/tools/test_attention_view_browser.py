"""The attention views' JavaScript, run in the system's headless Chromium (playwright).

The real MiniLM's attention, as the inline HTML a notebook shows (two views in
one page, loaded from a file:// URL and set as a page's content) and as the
standalone page `.save` writes (file://). A script added before the page's own
records what the views draw on their canvases: every stroked line (its ends,
opacity and colour as set) and every text. Each expected link is computed here
from the attention weights, by the view's rule: a link (query q -> key k) of a
head is drawn iff its weight, rounded to `av.DECIMALS`, is at least
`av.MIN_WEIGHT`, with that rounded weight as its opacity. Every page must also
log no console error, raise no uncaught exception and request nothing but
itself.
"""

import json
import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from bert_jax.checkpoints import pretrained
from bert_jax.tokenizers.wordpiece import BertTokenizer
from bert_jax.tools import attention_view as av
from tests.numerics import assert_close

TEXT_A, TEXT_B = "The cat sat on the mat.", "It fell asleep, purring."
CHROMIUM_MISSING = (
    "headless Chromium not found: sudo apt-get install -y chromium (CI: .ci/run installs it)"
)
# For a closed network: no update, sync or field-trial requests of the browser's own.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Which layer the head view opens on, and the layer, heads and token the tests choose.
FIRST, LAYER, HEAD, OTHER_HEAD, TOKEN = 2, 4, 7, 1, "cat"

# Runs before the page's scripts. Setting a canvas's width or height clears it
# and resets its context, so the record of that canvas starts again; a colour is
# reported as the script set it (the canvas reports it normalised, e.g. hsl as
# #rrggbb) unless the context has since been reset.
RECORDER = """
(() => {
  const logs = new WeakMap();
  const log = (c) => {
    if (!logs.has(c)) logs.set(c, {lines: [], texts: []});
    return logs.get(c);
  };
  for (const dim of ["width", "height"]) {
    const p = Object.getOwnPropertyDescriptor(HTMLCanvasElement.prototype, dim);
    Object.defineProperty(HTMLCanvasElement.prototype, dim, {
      ...p, set(v) { logs.delete(this); p.set.call(this, v); },
    });
  }
  const P = CanvasRenderingContext2D.prototype;
  const style = Object.getOwnPropertyDescriptor(P, "strokeStyle");
  const asSet = new WeakMap();
  Object.defineProperty(P, "strokeStyle", {
    ...style,
    set(v) { style.set.call(this, v); asSet.set(this, [String(v), style.get.call(this)]); },
  });
  const color = (ctx) => {
    const now = style.get.call(ctx), s = asSet.get(ctx);
    return s && s[1] === now ? s[0] : now;
  };
  const paths = new WeakMap(), at = new WeakMap();
  const {beginPath, moveTo, lineTo, stroke, fillText} = P;
  P.beginPath = function () { paths.set(this, []); return beginPath.call(this); };
  P.moveTo = function (x, y) { at.set(this, [x, y]); return moveTo.call(this, x, y); };
  P.lineTo = function (x, y) {
    const [x0, y0] = at.get(this) || [x, y];
    if (!paths.has(this)) paths.set(this, []);
    paths.get(this).push({x0, y0, x1: x, y1: y});
    at.set(this, [x, y]);
    return lineTo.call(this, x, y);
  };
  P.stroke = function (...args) {
    for (const s of paths.get(this) || []) {
      log(this.canvas).lines.push({...s, alpha: this.globalAlpha, color: color(this)});
    }
    return stroke.apply(this, args);
  };
  P.fillText = function (text, x, y, ...rest) {
    log(this.canvas).texts.push({text: String(text), x, y, align: this.textAlign, font: this.font});
    return fillText.call(this, text, x, y, ...rest);
  };
  window.__drawn = (c) => log(c);
})();
"""


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[dev]'")
    if path is None:
        pytest.skip(CHROMIUM_MISSING)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def atts(minilm_dir):
    """The real model's attention on one text and on a pair (the model loaded once)."""
    model, params = pretrained.load(minilm_dir)
    tok = BertTokenizer(str(minilm_dir / "vocab.txt"), do_lower_case=True)
    single = av.attention(model, params, tok, TEXT_A)
    pair = av.attention(model, params, tok, TEXT_A, TEXT_B)
    for att in (single, pair):
        assert np.isfinite(att.weights).all()  # the changes asserted below are real ones
    return single, pair


@pytest.fixture(scope="module")
def pages(atts, tmp_path_factory):
    """The HTML of each source: the standalone files, and a notebook-like page of both views."""
    single, _ = atts
    d = tmp_path_factory.mktemp("views")
    head, model = av.head_view(single, layer=FIRST), av.model_view(single)
    inline = d / "inline.html"
    inline.write_text(hosted(head, model), encoding="utf-8")
    return {
        "standalone": {"head": head.save(d / "head.html"), "model": model.save(d / "model.html")},
        "inline": {"head": inline, "model": inline},
    }


def hosted(*views: av.HtmlView) -> str:
    """A minimal page holding the views' inline HTML, as a notebook's outputs do."""
    outputs = "\n".join(f"<div class='output'>{v._repr_html_()}</div>" for v in views)
    head = "<!DOCTYPE html>\n<html><head><meta charset='utf-8'></head><body>"
    return f"{head}\n{outputs}\n</body></html>"


class Page:
    """A fresh page with the recorder, and what it logged: errors and requests."""

    def __init__(self, browser, path: Path, load: str, scale: int = 1):
        self.context = browser.new_context(device_scale_factor=scale)
        # A view that failed to draw fails its test in seconds, not playwright's default 30.
        self.context.set_default_timeout(5000)
        self.page = self.context.new_page()
        self.page.add_init_script(RECORDER)
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        if load == "file":
            self.url = path.resolve().as_uri()
            self.page.goto(self.url)
        else:
            self.url = None
            self.page.goto("about:blank")  # the first blank page runs no init script
            self.page.set_content(path.read_text(encoding="utf-8"))

    def assert_quiet(self):
        # Everything inline: the page's own file is the one request (none for set_content).
        assert self.requests == ([self.url] if self.url else [])
        assert self.errors == []

    def close(self):
        self.context.close()


@pytest.fixture
def open_page(chromium):
    opened = []

    def open_(path: Path, load: str, scale: int = 1) -> Page:
        opened.append(Page(chromium, path, load, scale))
        return opened[-1]

    yield open_
    for p in opened:
        p.close()


# ----------------------------------------------- what is drawn, and expected


def opacities(att: av.Attention) -> np.ndarray:
    """(layers, heads, q, k) float64: each link's weight as the view stores it (thousandths)."""
    scale = 10**av.DECIMALS
    return np.rint(att.weights * scale).astype(np.float64) / scale


def expected_links(att, layer, heads, focus=None, links="all") -> dict:
    """{(colour, q, k): opacity} of the links drawn for `layer` and `heads`, as
    restricted by a hovered token (focus = ("q" or "k", index)) and the pair filter."""
    w, colors, n = opacities(att), av.head_colors(att.num_heads), len(att.tokens)
    out = {}
    for h in heads:
        for q in range(n):
            for k in range(n):
                if w[layer, h, q, k] < av.MIN_WEIGHT or not in_filter(att, q, k, links):
                    continue
                if focus and (q, k)[focus[0] == "k"] != focus[1]:
                    continue
                out[colors[h], q, k] = w[layer, h, q, k]
    return out


def in_filter(att, q, k, links) -> bool:
    if links == "all":
        return True
    return links == ("A" if q < att.b_start else "B") + ("A" if k < att.b_start else "B")


def to_fixed_2(x: float) -> str:
    """JavaScript's x.toFixed(2): the exact binary value, a tie rounded up (Python's: to even)."""
    return str(Decimal(x).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


class Panel:
    """A head panel's drawing, read back: the token labels and the links between them."""

    def __init__(self, page, canvas):
        drawn = json.loads(
            page.evaluate("c => JSON.stringify(window.__drawn(c))", canvas.element_handle())
        )
        tokens = [t for t in drawn["texts"] if t["font"].startswith("12px")]
        left = sorted((t for t in tokens if t["align"] == "right"), key=lambda t: t["y"])
        right = sorted((t for t in tokens if t["align"] == "left"), key=lambda t: t["y"])
        self.left, self.right = [t["text"] for t in left], [t["text"] for t in right]
        # Label i is drawn at row i's height: a line's ends name its query and key.
        row = {t["y"]: i for i, t in enumerate(left)}
        self.hover = {
            "q": [{"x": t["x"] - 3, "y": t["y"]} for t in left],  # right-aligned: ends at x
            "k": [{"x": t["x"] + 3, "y": t["y"]} for t in right],
        }
        self.links = {}
        for line in drawn["lines"]:
            assert left[0]["x"] < line["x0"] < line["x1"] < right[0]["x"], line
            key = (line["color"], row[line["y0"]], row[line["y1"]])
            assert key not in self.links, f"{key} drawn twice"
            self.links[key] = line["alpha"]
        # The weights printed beside the other column when one head is shown.
        self.printed = {
            row[t["y"]]: t["text"] for t in drawn["texts"] if not t["font"].startswith("12px")
        }


def assert_links(panel: Panel, want: dict):
    """The panel draws exactly the links of `want` (colour, query, key), at its opacities."""
    missing, extra = sorted(want.keys() - panel.links.keys()), sorted(panel.links.keys() - want)
    assert not missing and not extra, (
        f"of {len(want)} links, {len(missing)} not drawn (first: {missing[:3]}) and "
        f"{len(extra)} drawn that should not be (first: {extra[:3]})"
    )
    keys = sorted(want)
    # globalAlpha is kept as a float: within its precision of the stored weight.
    assert_close([panel.links[k] for k in keys], [want[k] for k in keys], rtol=1e-6)


def thumbnails(page, root) -> list[dict]:
    # One JSON string: playwright's own encoding of 20,000 objects takes seconds.
    return json.loads(
        page.evaluate(
            """root => JSON.stringify([...root.querySelectorAll("canvas.bjav-cell")].map((c) => ({
                 layer: Number(c.dataset.layer), head: Number(c.dataset.head),
                 lines: window.__drawn(c).lines})))""",
            root.element_handle(),
        )
    )


def assert_thumbnails(cells: list[dict], att, links="all"):
    """Every layer x head once, each with its head's drawn links (count, colour, opacities)."""
    assert sorted((c["layer"], c["head"]) for c in cells) == [
        (layer, h) for layer in range(att.num_layers) for h in range(att.num_heads)
    ]
    colors = av.head_colors(att.num_heads)
    for c in cells:
        want = expected_links(att, c["layer"], [c["head"]], links=links)
        where = f"layer {c['layer']}, head {c['head']}"
        assert len(c["lines"]) == len(want), where
        assert {line["color"] for line in c["lines"]} <= {colors[c["head"]]}, where
        got = sorted(line["alpha"] for line in c["lines"])
        assert_close(got, sorted(want.values()), rtol=1e-6, err_msg=where)


# ------------------------------------------------------------------- tests

# (html, how it is loaded, devicePixelRatio): the last as on a HiDPI screen, where the
# canvases hold 2x the pixels and every coordinate drawn or hovered stays in CSS pixels.
SOURCES = [("standalone", "file", 1), ("inline", "file", 1), ("inline", "set_content", 2)]


@pytest.mark.parametrize("source,load,scale", SOURCES)
def test_head_view_draws_the_layer_and_follows_its_controls(
    open_page, atts, pages, source, load, scale
):
    att, _ = atts
    n, every_head = len(att.tokens), range(att.num_heads)
    p = open_page(pages[source]["head"], load, scale)
    root = p.page.locator(".bjav[data-view=head]")
    assert root.count() == 1, p.errors
    canvas = root.locator("canvas.bjav-panel")
    first = Panel(p.page, canvas)
    assert first.left == first.right == list(att.tokens)
    assert_links(first, expected_links(att, FIRST, every_head))
    assert root.locator(".bjav-sw").count() == att.num_heads
    assert root.locator(".bjav-sw.off").count() == 0

    root.locator("select.bjav-layer").select_option(label=str(LAYER))
    chosen = Panel(p.page, canvas)
    assert_links(chosen, expected_links(att, LAYER, every_head))
    assert chosen.links != first.links

    root.locator(".bjav-sw").nth(HEAD).dblclick()  # this head only
    assert root.locator(".bjav-sw.off").count() == att.num_heads - 1
    one = Panel(p.page, canvas)
    assert_links(one, expected_links(att, LAYER, [HEAD]))
    assert one.printed == {}

    # Hovering a token draws its links only and, with one head, prints their weights.
    i = att.tokens.index(TOKEN)
    for side in ("q", "k"):
        canvas.hover(position=one.hover[side][i])
        focused = Panel(p.page, canvas)
        want = expected_links(att, LAYER, [HEAD], focus=(side, i))
        assert 0 < len(want) < len(one.links)
        assert_links(focused, want)
        row = opacities(att)[LAYER, HEAD, i] if side == "q" else opacities(att)[LAYER, HEAD, :, i]
        assert focused.printed == {j: to_fixed_2(row[j]) for j in range(n)}
    p.page.mouse.move(0, 0)  # off the canvas: every link of the head again
    assert_links(Panel(p.page, canvas), expected_links(att, LAYER, [HEAD]))

    root.locator(".bjav-sw").nth(OTHER_HEAD).click()  # toggled back on
    assert_links(Panel(p.page, canvas), expected_links(att, LAYER, [OTHER_HEAD, HEAD]))
    root.locator("button", has_text="all").click()
    assert_links(Panel(p.page, canvas), expected_links(att, LAYER, every_head))
    p.assert_quiet()


@pytest.mark.parametrize("source,load,scale", SOURCES)
def test_model_view_draws_every_head_and_enlarges_one(open_page, atts, pages, source, load, scale):
    att, _ = atts
    p = open_page(pages[source]["model"], load, scale)
    root = p.page.locator(".bjav[data-view=model]")
    assert root.count() == 1, p.errors
    assert_thumbnails(thumbnails(p.page, root), att)
    assert root.locator("canvas.bjav-panel").count() == 0

    cell = root.locator(f"canvas.bjav-cell[data-layer='{LAYER}'][data-head='{HEAD}']")
    cell.click()
    canvas = root.locator("canvas.bjav-panel")
    big = Panel(p.page, canvas)
    assert big.left == big.right == list(att.tokens)
    assert_links(big, expected_links(att, LAYER, [HEAD]))
    i = att.tokens.index(TOKEN)
    canvas.hover(position=big.hover["k"][i])
    want = expected_links(att, LAYER, [HEAD], focus=("k", i))
    assert 0 < len(want) < len(big.links)
    assert_links(Panel(p.page, canvas), want)

    cell.click()  # the same thumbnail again closes it
    assert canvas.count() == 0
    root.locator(f"canvas.bjav-cell[data-layer='{FIRST}'][data-head='{OTHER_HEAD}']").click()
    assert_links(Panel(p.page, canvas), expected_links(att, FIRST, [OTHER_HEAD]))
    p.assert_quiet()


def test_pair_filter_redraws_both_views(open_page, atts, tmp_path):
    _, pair = atts
    path = tmp_path / "pair.html"
    views = av.head_view(pair, layer=FIRST), av.model_view(pair, links="BA")
    path.write_text(hosted(*views), encoding="utf-8")
    p = open_page(path, "file")
    head = p.page.locator(".bjav[data-view=head]")
    canvas = head.locator("canvas.bjav-panel")
    assert_links(Panel(p.page, canvas), expected_links(pair, FIRST, range(pair.num_heads)))
    for links in ("AB", "BB"):
        head.locator("select.bjav-links").select_option(links)
        want = expected_links(pair, FIRST, range(pair.num_heads), links=links)
        assert want
        assert_links(Panel(p.page, canvas), want)

    model = p.page.locator(".bjav[data-view=model]")
    assert_thumbnails(thumbnails(p.page, model), pair, links="BA")
    model.locator("select.bjav-links").select_option("all")
    assert_thumbnails(thumbnails(p.page, model), pair)
    p.assert_quiet()
