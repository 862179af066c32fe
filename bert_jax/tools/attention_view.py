"""Attention weights of a bert_jax model on a text, shown as interactive HTML views.

    from bert_jax.tools import attention_view as av

    att = av.from_checkpoint("/ckpt/minilm", "The cat sat on the mat.", "It was tired.")
    av.head_view(att)                  # one layer: tokens linked by attention, a colour per head
    av.model_view(att)                 # every layer x head as a thumbnail; click one to enlarge
    av.head_view(att).save("head.html")  # a standalone page: inline JS/CSS, no network

The weights come from the model itself (`output_attentions=True`, the
softmax probabilities of every layer and head), so what is drawn is what the
model computed. The views follow the head view and model view of BertViz
(Vig 2019, "A Multiscale Visualization of Attention in the Transformer
Model"), written here from scratch: the data is embedded as JSON (rounded to
3 decimals, as integers in thousandths) and drawn on canvases by a small
inline script, so a saved file opens offline in any browser and a notebook
shows the view inline. The numeric analyses (attention to [CLS]/[SEP],
entropy) are in `bert_jax.tools.attention_analysis`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

import flax.linen as nn
import numpy as np

from bert_jax.checkpoints import pretrained
from bert_jax.tokenizers import from_folder as tokenizers_from_folder

# Weights are stored rounded to 3 decimals, as integers in thousandths ("123"
# for 0.123: half the bytes of "0.123"); 0.001 is below what an opacity shows.
DECIMALS = 3
# Links weaker than this are not drawn (invisible at that opacity anyway).
MIN_WEIGHT = 0.005
# Sentence-pair filters: which (query, key) links are drawn.
FILTERS = {"all": "all", "AA": "A→A", "AB": "A→B", "BA": "B→A", "BB": "B→B"}


@dataclasses.dataclass(frozen=True)
class Attention:
    """The tokens of one input and every layer's attention weights on them.

    Attributes:
      tokens: the wordpieces, [CLS] and [SEP] included.
      weights: (layers, heads, query, key) float32; row [l, h, q] is the
        softmax distribution of query token q over the keys, summing to 1.
      b_start: index of the first token of the second text of a pair (the
        token after the first [SEP]); None for a single text.
    """

    tokens: tuple[str, ...]
    weights: np.ndarray
    b_start: int | None = None

    def __post_init__(self):
        n = len(self.tokens)
        if self.weights.ndim != 4 or self.weights.shape[2:] != (n, n):
            raise ValueError(
                f"weights must be (layers, heads, {n}, {n}) for {n} tokens, "
                f"got {self.weights.shape}"
            )
        if self.b_start is not None and not 0 < self.b_start < n:
            raise ValueError(f"b_start {self.b_start} is not inside the {n} tokens")

    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    def check_layer(self, layer: int) -> int:
        """`layer`, or a ValueError naming the valid range (negative indices count back)."""
        if not -self.num_layers <= layer < self.num_layers:
            raise ValueError(
                f"layer {layer} is out of range: the model has {self.num_layers} layers "
                f"(0-{self.num_layers - 1})"
            )
        return layer % self.num_layers

    def check_head(self, head: int) -> int:
        if not -self.num_heads <= head < self.num_heads:
            raise ValueError(
                f"head {head} is out of range: the model has {self.num_heads} heads "
                f"(0-{self.num_heads - 1})"
            )
        return head % self.num_heads


def attention(
    model: nn.Module,
    params: dict,
    tokenizer,  # any of `tokenizers_from_folder`'s
    text_a: str,
    text_b: str | None = None,
) -> Attention:
    """Runs `model` (BertModel or any task model of `pretrained.load`) on a text or a pair.

    Raises:
      ValueError: a text is empty (or has no wordpiece), or the input is
        longer than the model's position embeddings.
    """
    for name, text in (("text_a", text_a), ("text_b", text_b)):
        if text is not None and not tokenizer.tokenize(text):
            raise ValueError(f"{name} is empty (no wordpieces in {text!r})")
    enc = tokenizer.encode(text_a, text_b)
    n, limit = len(enc["input_ids"]), model.config.max_position_embeddings
    if n > limit:
        # No silent truncation: the view would not show the text that was given.
        raise ValueError(f"the input is {n} tokens; the model takes at most {limit}")
    batch = {k: np.asarray([v], np.int32) for k, v in enc.items()}
    out = model.apply(
        {"params": params},
        batch["input_ids"],
        batch["token_type_ids"],
        batch["attention_mask"],
        deterministic=True,
        output_attentions=True,
    )
    weights = np.stack([np.asarray(a[0], np.float32) for a in out["attentions"]])
    b_start = None
    if text_b is not None:  # after text_a's encoding and the extra separators (RoBERTa's 2)
        b_start = len(tokenizer.encode(text_a)["input_ids"]) + tokenizer.seps_between_pair - 1
    return Attention(tuple(tokenizer.convert_ids_to_tokens(enc["input_ids"])), weights, b_start)


def from_checkpoint(
    path: str | os.PathLike,
    text_a: str,
    text_b: str | None = None,
    do_lower_case: bool | None = None,
) -> Attention:
    """`attention` with the model and vocab.txt of a checkpoint directory or workdir.

    Args:
      do_lower_case: None reads it from the directory (HF tokenizer_config.json,
        a workdir's task.json), else True (uncased BERT).
    """
    d = Path(path)
    try:
        tokenizers_from_folder.family(d)  # before reading the weights
    except ValueError as e:
        raise FileNotFoundError(f"{e}: the tokenizer needs them") from e
    model, params = pretrained.load(d)
    if do_lower_case is None:
        do_lower_case = _stored_lower_case(d)
    tokenizer = tokenizers_from_folder.from_folder(d, do_lower_case)
    return attention(model, params, tokenizer, text_a, text_b)


def _stored_lower_case(d: Path) -> bool:
    for name in ("tokenizer_config.json", "task.json"):
        if (d / name).is_file():
            value = json.loads((d / name).read_text()).get("do_lower_case")
            if value is not None:
                return bool(value)
    return True


# ----------------------------------------------------------------------------
# HTML views.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HtmlView:
    """An interactive view: shown inline by Jupyter, or saved as a standalone page."""

    html: str  # a fragment: container, style, JSON data and script
    summary: str

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<{self.summary}>"  # the text/plain a notebook stores next to the HTML

    def save(self, path: str | os.PathLike) -> Path:
        """Writes a standalone HTML file (every script and style inline) and returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{_escape(self.summary)}</title></head>\n<body>\n{self.html}\n</body></html>\n",
            encoding="utf-8",
        )
        return path


def head_view(
    att: Attention,
    layer: int = 0,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    links: str = "all",
) -> HtmlView:
    """One layer at a time: tokens in two columns linked by lines, one colour per head.

    Left column: the attending token (query); right: the attended one (key);
    a line's opacity is its weight. Controls: a layer selector; clicking a
    head's colour toggles it (double-click shows only that head); hovering a
    token shows only its links (and their weights when one head is shown);
    for a pair, a selector for all links or A→B / B→A / A→A / B→B.

    Args:
      att: from `attention` or `from_checkpoint`.
      layer: the layer shown first.
      layers, heads: the ones to include (default all; fewer make a smaller file).
      links: the pair filter shown first, a key of FILTERS.
    """
    layers, heads = _select(att, layers, heads)
    first = att.check_layer(layer)
    if first not in layers:
        raise ValueError(f"layer {layer} is not among the included layers {layers}")
    data = _data(att, layers, heads, links) | {"kind": "head", "layer": layers.index(first)}
    return HtmlView(
        _fragment(data), f"head view: {len(att.tokens)} tokens, {_describe(layers, heads)}"
    )


def model_view(
    att: Attention,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    links: str = "all",
) -> HtmlView:
    """A grid of layers (rows) x heads (columns), each cell a thumbnail of its links.

    Clicking a thumbnail enlarges it with its tokens (hover works as in
    `head_view`); for a pair, the same link filter applies to every cell.
    """
    layers, heads = _select(att, layers, heads)
    data = _data(att, layers, heads, links) | {"kind": "model"}
    return HtmlView(
        _fragment(data), f"model view: {len(att.tokens)} tokens, {_describe(layers, heads)}"
    )


def _select(
    att: Attention, layers: Sequence[int] | None, heads: Sequence[int] | None
) -> tuple[list[int], list[int]]:
    layers = list(range(att.num_layers)) if layers is None else [att.check_layer(i) for i in layers]
    heads = list(range(att.num_heads)) if heads is None else [att.check_head(i) for i in heads]
    if not layers or not heads:
        raise ValueError("a view needs at least one layer and one head")
    return layers, heads


def _describe(layers: list[int], heads: list[int]) -> str:
    return f"{len(layers)} layers x {len(heads)} heads"


def head_colors(n: int) -> list[str]:
    """n distinct colours: hues a golden angle apart, so neighbouring heads differ most."""
    return [f"hsl({(i * 137.508) % 360:.0f},70%,45%)" for i in range(n)]


def _data(att: Attention, layers: list[int], heads: list[int], links: str) -> dict:
    if links not in FILTERS:
        raise ValueError(f"links {links!r} is not one of {list(FILTERS)}")
    if links != "all" and att.b_start is None:
        raise ValueError(f"links={links!r} needs a sentence pair; this input is one text")
    colors = head_colors(att.num_heads)
    return {
        "tokens": list(att.tokens),
        "b_start": att.b_start,
        "layers": layers,
        "heads": heads,
        "colors": [colors[h] for h in heads],
        "filter": links,
        "filters": FILTERS,
        # (layers, heads, query, key) weights are attn / scale: see DECIMALS.
        "scale": 10**DECIMALS,
        "min_weight": MIN_WEIGHT,
        "attn": np.rint(att.weights[np.ix_(layers, heads)] * 10**DECIMALS).astype(int).tolist(),
    }


def _script_json(data: dict) -> str:
    """Compact JSON, safe inside a <script> element (no '</script>' can close it early)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    # '<', '>' and '&' only occur inside JSON strings, where \u escapes mean the same.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Ids must be unique in a page (a notebook shows many views); the digest keeps
# them stable across reruns, the counter apart when one view is shown twice.
_serial = itertools.count()


def _fragment(data: dict) -> str:
    payload = _script_json(data)
    digest = hashlib.sha1(payload.encode()).hexdigest()[:8]
    uid = f"bjav-{digest}-{next(_serial)}"
    return (
        f'<div class="bjav" id="{uid}"></div>\n'
        f"<style>{_CSS}</style>\n"
        f'<script type="application/json" id="{uid}-data">{payload}</script>\n'
        f"<script>{_JS.replace('__UID__', uid)}</script>"
    )


_CSS = """
.bjav{font:12px/1.3 sans-serif;color:#222;background:#fff;padding:6px;display:inline-block}
.bjav-bar{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin:0 0 6px}
.bjav-sw{width:15px;height:15px;border-radius:3px;cursor:pointer;display:inline-block}
.bjav-sw.off{opacity:.15}
.bjav-note{color:#666;margin:0 0 4px}
.bjav-grid{display:grid;gap:3px;align-items:center}
.bjav-cell{border:1px solid #ddd;cursor:pointer}
.bjav-cell:hover,.bjav-cell.on{border-color:#222}
.bjav button,.bjav select{font:inherit}
"""

# The drawing code, shared by both views. Links are drawn on a canvas (a
# 12-head layer of 100 tokens is 120,000 lines, too many for SVG elements);
# weights under MIN_WEIGHT are skipped. The classes and data- attributes on the
# root, the selectors and the canvases are also the hooks by which
# tests/tools/test_attention_view_browser.py finds what it checks.
_JS = r"""
(function () {
  const root = document.getElementById("__UID__");
  const d = JSON.parse(document.getElementById("__UID__-data").textContent);
  d.attn = d.attn.map((l) => l.map((h) => h.map((r) => r.map((v) => v / d.scale))));
  const n = d.tokens.length;
  const el = (tag, cls, parent, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  };
  // Is the link query q -> key k shown under the pair filter?
  const keep = (q, k) => {
    if (d.b_start === null || state.filter === "all") return true;
    const qa = q < d.b_start, ka = k < d.b_start;
    return state.filter === (qa ? "A" : "B") + (ka ? "A" : "B");
  };
  const state = {filter: d.filter};
  const sizeCanvas = (c, w, h) => {
    const r = window.devicePixelRatio || 1;
    c.width = Math.round(w * r); c.height = Math.round(h * r);
    c.style.width = w + "px"; c.style.height = h + "px";
    const ctx = c.getContext("2d");
    ctx.setTransform(r, 0, 0, r, 0, 0);
    return ctx;
  };

  // A labelled panel: tokens in two columns, links between them, hover focus.
  function panel(parent) {
    const c = el("canvas", "bjav-panel", parent), rowH = 18, gap = 150, top = 4;
    const probe = c.getContext("2d");
    probe.font = "12px sans-serif";
    const labelW = 14 + Math.max(...d.tokens.map((t) => probe.measureText(t).width));
    const width = 2 * labelW + gap, height = n * rowH + 2 * top;
    let mats = [], focus = null;
    function draw() {
      const ctx = sizeCanvas(c, width, height);
      ctx.font = "12px sans-serif";
      ctx.textBaseline = "middle";
      const y = (i) => top + (i + 0.5) * rowH, x0 = labelW, x1 = labelW + gap;
      if (focus) {
        ctx.fillStyle = "#e8e8e8";
        ctx.fillRect(focus.side === "q" ? 0 : x1, top + focus.i * rowH, labelW, rowH);
      }
      ctx.lineWidth = 2;
      for (const {m, color} of mats) {
        ctx.strokeStyle = color;
        for (let q = 0; q < n; q++) {
          if (focus && focus.side === "q" && focus.i !== q) continue;
          for (let k = 0; k < n; k++) {
            if (focus && focus.side === "k" && focus.i !== k) continue;
            const w = m[q][k];
            if (w < d.min_weight || !keep(q, k)) continue;
            ctx.globalAlpha = w;
            ctx.beginPath(); ctx.moveTo(x0, y(q)); ctx.lineTo(x1, y(k)); ctx.stroke();
          }
        }
      }
      ctx.globalAlpha = 1;
      ctx.fillStyle = "#222";
      d.tokens.forEach((t, i) => {
        ctx.textAlign = "right"; ctx.fillText(t, x0 - 6, y(i));
        ctx.textAlign = "left"; ctx.fillText(t, x1 + 6, y(i));
      });
      if (focus && mats.length === 1) {  // one head: print the focused weights
        const m = mats[0].m, x = focus.side === "q" ? x1 - 30 : x0 + 4;
        ctx.font = "10px sans-serif"; ctx.textAlign = "left";
        for (let j = 0; j < n; j++) {
          const [q, k] = focus.side === "q" ? [focus.i, j] : [j, focus.i];
          if (!keep(q, k)) continue;
          ctx.fillStyle = "rgba(255,255,255,0.85)"; ctx.fillRect(x - 1, y(j) - 6, 26, 12);
          ctx.fillStyle = "#555"; ctx.fillText(m[q][k].toFixed(2), x, y(j));
        }
      }
    }
    c.addEventListener("mousemove", (e) => {
      const r = c.getBoundingClientRect();
      const i = Math.floor((e.clientY - r.top - top) / rowH);
      const f = i >= 0 && i < n ? {side: e.clientX - r.left < width / 2 ? "q" : "k", i} : null;
      if (JSON.stringify(f) !== JSON.stringify(focus)) { focus = f; draw(); }
    });
    c.addEventListener("mouseleave", () => { focus = null; draw(); });
    return {set(m) { mats = m; draw(); }, redraw: draw};
  }

  function thumbnail(c, m, color) {
    const w = 80, h = Math.max(40, Math.min(120, 4 * n)), pad = 3;
    const ctx = sizeCanvas(c, w, h);
    const y = (i) => pad + (n > 1 ? i * (h - 2 * pad) / (n - 1) : (h - 2 * pad) / 2);
    ctx.strokeStyle = color; ctx.lineWidth = 1;
    for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
      const wt = m[q][k];
      if (wt < d.min_weight || !keep(q, k)) continue;
      ctx.globalAlpha = wt;
      ctx.beginPath(); ctx.moveTo(pad, y(q)); ctx.lineTo(w - pad, y(k)); ctx.stroke();
    }
  }

  const bar = el("div", "bjav-bar", root);
  const onRedraw = [];
  if (d.b_start !== null) {
    el("span", "", bar, "links:");
    const s = el("select", "bjav-links", bar);
    for (const [v, label] of Object.entries(d.filters)) {
      const o = el("option", "", s, label); o.value = v; o.selected = v === state.filter;
    }
    s.addEventListener("change", () => { state.filter = s.value; onRedraw.forEach((f) => f()); });
  }

  if (d.kind === "head") {
    const on = d.heads.map(() => true);
    let layer = d.layer;
    el("span", "", bar, "layer:");
    const ls = el("select", "bjav-layer", bar);
    d.layers.forEach((l, i) => {
      const o = el("option", "", ls, String(l)); o.value = i; o.selected = i === layer;
    });
    el("span", "", bar, "heads:");
    const sw = d.heads.map((h, i) => {
      const b = el("span", "bjav-sw", bar);
      b.style.background = d.colors[i];
      b.title = "head " + h + ": click to toggle, double-click to show only this head";
      b.addEventListener("click", () => { on[i] = !on[i]; update(); });
      b.addEventListener("dblclick", () => { on.fill(false); on[i] = true; update(); });
      return b;
    });
    const all = el("button", "", bar, "all");
    all.addEventListener("click", () => { on.fill(true); update(); });
    el("div", "bjav-note", root,
       "left: attending token (query), right: attended token (key); hover a token for its links");
    const p = panel(root);
    function update() {
      sw.forEach((b, i) => b.classList.toggle("off", !on[i]));
      p.set(d.heads.flatMap((h, i) => on[i] ? [{m: d.attn[layer][i], color: d.colors[i]}] : []));
    }
    ls.addEventListener("change", () => { layer = Number(ls.value); update(); });
    onRedraw.push(p.redraw);
    update();
  } else {
    el("div", "bjav-note", root,
       "rows: layers, columns: heads; click a thumbnail to enlarge it");
    const grid = el("div", "bjav-grid", root);
    grid.style.gridTemplateColumns = "auto repeat(" + d.heads.length + ", auto)";
    el("span", "", grid);
    d.heads.forEach((h) => el("span", "", grid, "head " + h));
    const cells = [];
    const detailNote = el("div", "bjav-note", root);
    const detail = el("div", "", root);
    let chosen = null, big = null;
    function choose(li, hi) {
      cells.forEach((c) => c.c.classList.toggle("on", c.li === li && c.hi === hi));
      if (chosen && chosen[0] === li && chosen[1] === hi) {
        chosen = null; detail.textContent = ""; detailNote.textContent = ""; big = null;
        return;
      }
      chosen = [li, hi];
      detailNote.textContent = "layer " + d.layers[li] + ", head " + d.heads[hi] +
        " (click the thumbnail again to close)";
      detail.textContent = "";
      big = panel(detail);
      big.set([{m: d.attn[li][hi], color: d.colors[hi]}]);
    }
    d.layers.forEach((l, li) => {
      el("span", "", grid, "layer " + l);
      d.heads.forEach((h, hi) => {
        const c = el("canvas", "bjav-cell", grid);
        c.title = "layer " + l + ", head " + h;
        c.dataset.layer = l; c.dataset.head = h;
        c.addEventListener("click", () => choose(li, hi));
        cells.push({c, li, hi});
      });
    });
    const drawAll = () => {
      cells.forEach(({c, li, hi}) => thumbnail(c, d.attn[li][hi], d.colors[hi]));
      if (big) big.redraw();
    };
    onRedraw.push(drawAll);
    drawAll();
  }
  root.dataset.view = d.kind;  // set last: the view has drawn
})();
"""
