"""PNG outputs of training (PIL only): the training curve and example predictions."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from incontext import canvas, outputs


def _save(img: Image.Image, path: str) -> None:
  outputs.write_image(path, img, format="PNG")  # temporary name, then a rename


def curve_png(
  path: str,
  history: list[dict],
  *,
  size=(640, 360),
  eval_key: str = "eval/miou",
  eval_label: str = "eval mIoU % (red, 0-100)",
) -> None:
  """Train loss (log scale, left axis) and, when the history has any, the `eval_key` mIoU
  points (%, 0-100, red dots, named `eval_label`) over steps; the legend names only the
  series drawn."""
  w, h = size
  pad = 48
  img = Image.new("RGB", size, "white")
  d = ImageDraw.Draw(img)
  d.rectangle([pad, 10, w - pad, h - pad], outline="black")
  pts = [
    (r["step"], r["train/loss"])
    for r in history
    if "train/loss" in r and r["train/loss"] > 0 and math.isfinite(r["train/loss"])
  ]
  ev = [(r["step"], r[eval_key]) for r in history if eval_key in r]
  if not pts:
    _save(img, path)
    return
  steps = [p[0] for p in pts + ev]
  s0, s1 = min(steps), max(max(steps), min(steps) + 1)
  lo, hi = math.log10(min(p[1] for p in pts)), math.log10(max(p[1] for p in pts))
  hi = max(hi, lo + 1e-3)
  x = lambda s: pad + (s - s0) / (s1 - s0) * (w - 2 * pad)
  y = lambda v: 10 + (hi - math.log10(v)) / (hi - lo) * (h - pad - 10)
  d.line([(x(s), y(v)) for s, v in pts], fill="blue", width=2)
  d.text((pad, h - pad + 6), f"step {s0}", fill="black")
  d.text((w - pad - 60, h - pad + 6), f"step {s1}", fill="black")
  d.text((2, 10), f"{10**hi:.3g}", fill="blue")
  d.text((2, h - pad - 10), f"{10**lo:.3g}", fill="blue")
  legend = "train loss (blue, log)" + (f"  {eval_label}" if ev else "")
  d.text((pad + 4, h - 20), legend, fill="black")  # names only the series drawn
  for s, v in ev:
    cx, cy = x(s), 10 + (100 - v) / 100 * (h - pad - 10)
    d.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill="red")
    d.text((cx - 10, cy - 14), f"{v:.0f}", fill="red")
  _save(img, path)


def predictions_png(
  path: str, episodes: list[dict], preds: np.ndarray, *, n: int = 8, scale: int = 0
) -> None:
  """One row per episode: prompt image | prompt target | query image | query truth | pred,
  under a header naming the columns (`COLUMNS`)."""
  rows = []
  for ep, pq in list(zip(episodes, preds))[:n]:
    img = canvas.denormalize(ep["image"])
    tgt = canvas.denormalize(ep["target"])
    hh = img.shape[0] // 2
    pal = np.concatenate([np.zeros((1, 3), np.uint8), np.asarray(ep["colours"], np.uint8)], 0)
    truth = pal[np.clip(ep["query_label"], 0, len(pal) - 1)].astype(np.float32)
    rows.append(
      np.concatenate([img[:hh], tgt[:hh], img[hh:], truth, canvas.denormalize(pq)], axis=1)
    )
  if not rows:
    return
  sep = lambda a: np.pad(a, ((0, 2), (0, 0), (0, 0)), constant_values=255)
  grid = np.concatenate([sep(r) for r in rows], 0).astype(np.uint8)
  im = Image.fromarray(grid)
  scale = scale or max(1, 256 // max(1, rows[0].shape[0]))
  if scale > 1:
    im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
  _save(_with_headers(im, COLUMNS), path)


COLUMNS = ("prompt", "prompt mask", "query", "truth", "prediction")


def _with_headers(im: Image.Image, names) -> Image.Image:
  """`im` under a white strip naming its equal-width columns (black text, centred)."""
  head = 18
  out = Image.new("RGB", (im.width, im.height + head), "white")
  out.paste(im, (0, head))
  d = ImageDraw.Draw(out)
  cw = im.width / len(names)
  for i, name in enumerate(names):
    tw = d.textlength(name)
    d.text((i * cw + max(0, (cw - tw) / 2), 3), name, fill="black")
  return out
