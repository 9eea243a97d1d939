"""A local Gradio app for in-context segmentation (the `incontext demo` command).

Tabs:
  Images          prompt images with a brush-painted mask (each brush colour = one object or
                  class) or an uploaded mask, query images, the ensemble and the seg type ->
                  overlays (each object tinted with the colour it was painted in) and the
                  label PNGs as `incontext segment` writes them (index = label id, palette =
                  the painted colours).
  Video           an MP4, the objects painted on its first frame, memory K -> overlay MP4 and a
                  zip of DAVIS-format PNGs (`incontext.video.propagate`).
  Learned prompt  an exported prompt file (`incontext export-prompt`) and query images.

  app = build_app(Segmenter.from_checkpoint("params/"))
  app.launch(server_name="127.0.0.1", server_port=7860)

Every handler turns bad input (no mask painted, a mask painted with no image under it, a mask
whose size does not match its image, a video over the frame limit, ...) and any other failure
into a one-line message shown in the page, never a stack trace; an upload Gradio cannot decode
(a file that is not an image or video) gives a one-line error message too, not Gradio's
generic one. A query that cannot be read is named in its own line while the others are
segmented; a prompt image or mask the browser cannot read is refused at upload (the page's
script, `_UPLOAD_CHECK`). Uploaded masks are read by the commands' mask reader
(`imageio.load_mask`). Each request writes into its own folder, removed when the same handler
runs again (Gradio serves its own copies of the returned files) and at exit. The helpers that
do not need Gradio (`editor_to_prompt`, `segment_images`, `segment_video`, ...) are plain functions.
Gradio (`pip install 'incontext[demo]'`) is imported only by `build_app`.
"""

from __future__ import annotations

import logging
import os
import zipfile
from typing import Sequence

import numpy as np
from PIL import Image

from incontext import canvas, imageio, outputs, predict, video, videoio
from incontext.data import procedural
from incontext.imageio import InputError

log = logging.getLogger(__name__)

# Brush colours: one per object (saturated, far apart, far from black).
BRUSH_COLOURS = (
  (255, 0, 0),
  (0, 200, 0),
  (0, 90, 255),
  (255, 210, 0),
  (255, 0, 255),
  (0, 230, 230),
)
MAX_VIDEO_FRAMES = 300
ALPHA = 0.5  # overlay: 0.5 image + 0.5 colour on segmented pixels


def hex_colour(c) -> str:
  return "#" + "".join(f"{int(v):02x}" for v in c)


# -- prompts from the editor ----------------------------------------------------------------
def _rgb(a) -> np.ndarray | None:
  if a is None:
    return None
  if isinstance(a, str):
    a = Image.open(a)
  if isinstance(a, Image.Image):
    a = np.asarray(a.convert("RGBA"))
  a = np.asarray(a)
  if a.ndim == 2:
    a = np.repeat(a[..., None], 3, -1)
  return a


def painted_mask(layers: Sequence, hw, colours=BRUSH_COLOURS) -> np.ndarray:
  """Editor layers (RGBA [h, w, 4]) -> uint8 [H, W, 3] colour mask: every painted pixel
  (alpha >= 128, later layers on top) snapped to the nearest brush colour; black elsewhere."""
  pal = np.asarray(colours, np.float32)
  out = np.zeros(tuple(hw) + (3,), np.uint8)
  for layer in layers:
    a = _rgb(layer)
    if a is None or a.ndim != 3 or a.shape[-1] != 4:
      continue
    if a.shape[:2] != tuple(hw):
      a = np.asarray(Image.fromarray(a).resize((hw[1], hw[0]), Image.NEAREST))
    on = a[..., 3] >= 128
    if not on.any():
      continue
    d = ((a[on, :3].astype(np.float32)[:, None] - pal[None]) ** 2).sum(-1)
    out[on] = np.asarray(colours, np.uint8)[d.argmin(1)]
  return out


def editor_to_prompt(value, uploaded_mask=None, name: str = "prompt"):
  """An ImageEditor value ({'background', 'layers', 'composite'}) and an optional uploaded
  mask -> (image uint8 [H, W, 3], mask). The uploaded mask wins over painted strokes.

  Raises InputError with a message for the page: no image, nothing painted, strokes with no
  image under them, or an uploaded mask whose aspect ratio is not the image's.
  """

  value = value or {}
  bg = _rgb(value.get("background"))
  layers = value.get("layers") or []
  has_strokes = any(
    _rgb(l) is not None
    and _rgb(l).ndim == 3
    and _rgb(l).shape[-1] == 4
    and (_rgb(l)[..., 3] >= 128).any()
    for l in layers
  )
  if bg is None or (bg.shape[-1] == 4 and not bg[..., 3].any()):
    if has_strokes or uploaded_mask is not None:
      raise InputError(
        f"{name}: the mask has no image under it; upload the {name} image first, then paint on it"
      )
    raise InputError(f"{name}: upload an image")
  if bg.shape[-1] == 4:
    alpha = bg[..., 3:].astype(np.float32) / 255.0  # transparent parts shown as white
    bg = np.round(bg[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
  img = np.ascontiguousarray(bg[..., :3]).astype(np.uint8)
  if uploaded_mask is not None:
    m = (
      imageio.load_mask(uploaded_mask)
      if isinstance(uploaded_mask, str)
      else np.asarray(uploaded_mask)
    )
    if m.ndim == 3 and m.shape[-1] == 4:
      m = m[..., :3]
    predict.check_aspect(img.shape, m.shape, f"{name} image", f"{name} mask")
    if not np.asarray(m).any():
      raise InputError(f"{name} mask: is empty (all background)")
    return img, m
  mask = painted_mask(layers, img.shape[:2])
  if not mask.any():
    raise InputError(
      f"{name}: no mask painted; paint the object with the brush (one colour "
      "per object) or upload a mask"
    )
  return img, mask


# -- outputs --------------------------------------------------------------------------------
def tint(img: np.ndarray, colored: np.ndarray, fg: np.ndarray, alpha: float = ALPHA):
  """uint8 image with `alpha` of the colour blended in where fg (the page's overlay: unlike
  the official one of `segment`, which darkens the background and multiplies by the colour,
  it leaves the background as it is and keeps a painted colour visible on any object)."""
  out = np.where(fg[..., None], (1 - alpha) * img + alpha * colored.astype(np.float32), img)
  return np.clip(np.round(out), 0, 255).astype(np.uint8)


def segment_images(
  seg,
  prompts,
  queries: Sequence,
  out_dir: str,
  *,
  ensemble="feature",
  seg_type="instance",
  learned_prompt=None,
  errors: list | None = None,
):
  """Runs `seg.segment` and writes the outputs: the label PNGs as `incontext segment` writes
  them (index = label id: the uploaded mask's ids, or 1..K for the painted objects in
  `painted_to_ids` order; colours: the painted ones, else those `segment` picks) and overlays
  tinted with the same colours (`tint`).

  Args: prompts [(image, mask)], queries: paths or uint8 arrays.
    errors: when a list, a query file that is not a readable image is skipped and a line
      naming it by its file name (what the user uploaded, not the server's temporary path)
      is appended; when None, it raises InputError.
  Returns (overlays [(uint8 image, caption)], label PNG paths) of the readable queries.
  """

  imgs, names = [], []
  for i, q in enumerate(queries):
    if not isinstance(q, (str, os.PathLike)):
      imgs.append(np.asarray(q))
      names.append(f"query_{i}")
      continue
    try:
      imgs.append(imageio.load_image(q))
    except InputError as e:
      line = _user_named(e, q)
      if errors is None:
        raise InputError(line) from None
      errors.append(line)
      continue
    names.append(os.path.splitext(os.path.basename(q))[0])
  if not imgs:
    return [], []
  ids, shown = painted_to_ids([m for _, m in prompts])
  if shown is not None:  # the model sees object ids; the page shows the painted colours
    prompts = [(img, m) for (img, _), m in zip(prompts, ids)]
  results = seg.segment(
    prompts, imgs, ensemble=ensemble, seg_type=seg_type, learned_prompt=learned_prompt
  )
  overlays, files = [], []
  for name, img, res in zip(names, imgs, results):
    if shown is not None:  # painted objects keep their painted colours
      res.colours = _by_id(shown)
    colours = res.label_colours()  # by label id, as in the label PNG
    overlays.append((tint(img, colours[res.labels], res.labels > 0), name))
    path = os.path.join(out_dir, f"{name}.png")
    imageio.save_label_png(path, res.labels, res.label_colours())  # as `segment` writes it
    files.append(path)
  return overlays, files


def _user_named(e: BaseException, path) -> str:
  """An error message about an uploaded file with the server's temporary path replaced by the
  file's own name (Gradio keeps the uploaded name as the last part of its path)."""
  path = os.fspath(path)
  return str(e).replace(path, os.path.basename(path))


def refused_upload(value: str) -> str:
  """The status line for an upload the browser could not read as an image ("WHERE|TIME|NAME",
  set by the page's script, `_UPLOAD_CHECK`): Gradio drops such a file without a word."""
  where, _, rest = (value or "").partition("|")
  name = rest.partition("|")[2]  # after the upload's time stamp (each upload is news)
  if not name:
    return ""
  return f"**Error:** {where}: {name} is not an image (cannot be read); upload a PNG or JPEG"


# In the page: an image or mask upload the browser cannot decode is reported (the image editor
# drops it silently, the mask component fails later), by writing "WHERE|FILE NAME" into the
# hidden #upload_error box (with a time stamp, so the same file twice is a change too), whose
# change event shows `refused_upload` in the status line.
_UPLOAD_CHECK = """
() => {
  const where = {prompt1: "prompt 1", prompt2: "prompt 2", mask1: "prompt 1 mask",
                 mask2: "prompt 2 mask"};
  document.addEventListener("change", async (e) => {
    const t = e.target;
    if (!(t instanceof HTMLInputElement) || t.type !== "file" || !t.files?.length) return;
    const box = t.closest("#prompt1, #prompt2, #mask1, #mask2");
    if (!box) return;
    const f = t.files[0];
    try { (await createImageBitmap(f)).close(); return; } catch (err) {}
    const out = document.querySelector("#upload_error textarea");
    out.value = where[box.id] + "|" + Date.now() + "|" + f.name;
    out.dispatchEvent(new Event("input", {bubbles: true}));
  }, true);
}
"""


def painted_to_ids(masks: Sequence[np.ndarray]):
  """Painted colour masks -> (object-id maps, the colours to show them in).

  A brush colour names an object, it is not a colour the model must paint: a model trained
  with white targets only (Painter-style binary, e.g. the quickstart model) cannot inpaint a
  red prompt. So every distinct colour becomes an object id 1..K (brush colours first, in
  brush order, then any other colour in sorted order) and `Segmenter.segment` encodes the ids
  in the model's own convention (white for one object, the standard palette for several).

  Args: [H, W, 3] uint8 colour masks (black = background); [H, W] masks are label maps already.
  Returns (uint8 [H, W] id maps, uint8 [K+1, 3] colours with black first) when every mask is a
  colour mask; else (masks unchanged, None). A colour mask whose three channels are equal
  (a grey or white mask uploaded as RGB) is read as its grey label map.
  """
  masks = [np.asarray(m) for m in masks]
  if not masks or any(m.ndim != 3 for m in masks):
    return masks, None
  if all((m[..., :1] == m).all() for m in masks):
    return [np.ascontiguousarray(m[..., 0]) for m in masks], None
  cols = np.unique(np.concatenate([m.reshape(-1, 3) for m in masks]), axis=0)
  cols = [tuple(int(v) for v in c) for c in cols if any(c)]
  brush = [c for c in BRUSH_COLOURS if c in cols]
  cols = brush + [c for c in cols if c not in brush]
  if len(cols) > predict.MAX_LABEL:
    raise InputError(
      f"colour masks have {len(cols)} distinct colours; at most {predict.MAX_LABEL} objects "
      "are supported (is this a photo or an anti-aliased mask?)"
    )
  lut = {c: k + 1 for k, c in enumerate(cols)}
  ids = []
  for m in masks:
    out = np.zeros(m.shape[:2], np.uint8)
    for c in np.unique(m.reshape(-1, 3), axis=0):
      if c.any():
        out[np.all(m == c, axis=-1)] = lut[tuple(int(v) for v in c)]
    ids.append(out)
  return ids, np.asarray([(0, 0, 0)] + cols, np.uint8)


def _by_id(colours: np.ndarray | None) -> np.ndarray | None:
  """[K+1, 3] colours -> the [256, 3] colour-by-id table of `video.overlay`/`save_id_png`."""
  if colours is None:
    return None
  out = np.zeros((256, 3), np.uint8)
  out[: len(colours)] = colours
  return out


def segment_video(
  model,
  video_path: str,
  first_mask: np.ndarray,
  out_dir: str,
  *,
  memory: int = 8,
  max_frames: int = MAX_VIDEO_FRAMES,
  progress=None,
):
  """Propagates the first-frame mask through an MP4 -> (overlay.mp4 path, zip of DAVIS PNGs).

  first_mask: the painted colours [H, W, 3] (each colour one object; ids as `painted_to_ids`,
  shown in the painted colours) or an id map [H, W] (shown in the DAVIS colours).

  Frames are decoded and encoded one at a time; `progress(done, total)` after each frame.
  """

  info = videoio.probe(video_path)
  if info.num_frames > max_frames:
    raise InputError(
      f"the video has {info.num_frames} frames; this app's limit is "
      f"{max_frames} (trim it, or start the demo with a higher limit)"
    )
  (ids,), shown = painted_to_ids([first_mask])
  shown = _by_id(shown)  # None for an id map: the DAVIS colours
  ids = ids.astype(np.int32)
  if ids.shape != (info.height, info.width):
    raise InputError(
      f"the first-frame mask is {ids.shape[1]}x{ids.shape[0]} but the video is "
      f"{info.width}x{info.height}; paint on the video's first frame"
    )
  if not video.object_ids(ids):
    raise InputError("no object painted on the first frame")
  current = [None]

  def frames():
    for i, f in enumerate(videoio.read_frames(video_path)):
      if i >= max_frames:
        raise InputError(f"the video has more than {max_frames} frames (this app's limit)")
      current[0] = f
      yield f

  mp4 = os.path.join(out_dir, "overlay.mp4")
  zpath = os.path.join(out_dir, "masks.zip")
  total = info.num_frames or None
  with videoio.VideoWriter(mp4, fps=info.fps) as w, zipfile.ZipFile(zpath, "w") as z:
    for t, m in enumerate(video.propagate(model, frames(), ids, memory=memory)):
      png = os.path.join(out_dir, f"{t:05d}.png")
      video.save_id_png(png, m, shown)
      z.write(png, f"{t:05d}.png")
      os.remove(png)
      w.write(video.overlay(current[0], m, shown))
      if progress is not None:
        progress(t + 1, total)
  return mp4, zpath


# -- examples -------------------------------------------------------------------------------
def procedural_examples(folder: str, n: int = 3, size: int = 32, scale: int = 8) -> list:
  """Held-out procedural pairs (what the quickstart model is trained and evaluated on),
  upscaled `scale` x with nearest for display -> [[prompt, prompt mask, query], ...] paths."""

  eps = procedural.make_episodes(dict(image_size=size), seed=7, per_class=1)[:n]
  up = lambda a: np.repeat(np.repeat(a, scale, 0), scale, 1)
  rows = []
  for i, ep in enumerate(eps):
    half = ep["image"].shape[0] // 2

    img = canvas.denormalize(ep["image"])
    p_img, q_img = (np.clip(np.round(x), 0, 255).astype(np.uint8) for x in (img[:half], img[half:]))
    mask = (ep["prompt_label"] > 0).astype(np.uint8) * 255
    paths = [os.path.join(folder, f"example{i}_{s}.png") for s in ("prompt", "mask", "query")]
    for p, a in zip(paths, (up(p_img), up(mask), up(q_img))):
      Image.fromarray(a).save(p)
    rows.append(paths)
  return rows


# -- the app --------------------------------------------------------------------------------
def _message(e: BaseException) -> str:
  if isinstance(e, (InputError, ValueError, FileNotFoundError)):
    return f"**Error:** {e}"
  log.exception("demo: unexpected failure")
  return f"**Error:** {type(e).__name__}: {e}"


def _done(n: int, errors: Sequence[str], how: str = "") -> str:
  """The status after a run: what was segmented, then one line per query that was not."""
  lines = [f"Segmented {n} image(s){how}."] + [f"**Error:** {e}" for e in errors]
  return "\n\n".join(lines)


def _files(x) -> list[str]:
  if not x:
    return []
  x = x if isinstance(x, (list, tuple)) else [x]
  return [getattr(f, "name", f) for f in x]


def _upload_name(payload) -> str | None:
  for x in (payload, getattr(payload, "background", None), getattr(payload, "video", None)):
    name = getattr(x, "orig_name", None)
    if name:
      return str(name)
  return None


def _plain_upload_errors(component, what: str, gr):
  """A bad upload (not an image or video, unreadable) gives the app's one-line message (a
  gr.Error, no traceback logged) instead of Gradio's generic error: the component's decoding
  step (`preprocess`, run before the handler) is wrapped."""
  decode = component.preprocess

  def preprocess(payload):
    try:
      return decode(payload)
    except gr.Error:
      raise
    except Exception as e:  # noqa: BLE001 (any decoding failure is the upload's fault)
      name = _upload_name(payload)
      detail = " ".join(f"{type(e).__name__}: {e}".split())
      raise gr.Error(
        f"{what}{f' ({name})' if name else ''}: cannot read the upload ({detail})",
        print_exception=False,
      ) from None

  component.preprocess = preprocess
  return component


def build_app(seg, *, max_video_frames: int = MAX_VIDEO_FRAMES, examples: bool = True):
  """The Gradio Blocks app around a `Segmenter` (anything with `segment`, `model`,
  `load_learned_prompt`). Its output folder is `app.incontext_scratch.root`."""
  import gradio as gr  # optional: the `demo` extra

  brush = gr.Brush(
    colors=[hex_colour(c) for c in BRUSH_COLOURS],
    default_color=hex_colour(BRUSH_COLOURS[0]),
    color_mode="fixed",
  )
  # One folder per request (see outputs.Scratch: a handler's previous folder goes when it is
  # called again, by then Gradio has copied the files the previous call returned).
  scratch = outputs.Scratch("incontext_demo_")

  def editor(label, elem_id):
    return _plain_upload_errors(
      gr.ImageEditor(
        label=label,
        type="numpy",
        brush=brush,
        format="png",
        image_mode="RGBA",
        sources=["upload", "clipboard"],
        transforms=(),
        layers=False,
        elem_id=elem_id,
        height=360,
      ),
      label,
      gr,
    )

  def run_images(ed1, mask1, ed2, mask2, queries, ensemble, seg_type):
    try:
      prompts = [editor_to_prompt(ed1, mask1, "prompt 1")]
      value2 = ed2 or {}
      if value2.get("background") is not None or mask2 is not None:
        prompts.append(editor_to_prompt(ed2, mask2, "prompt 2"))
      qs = _files(queries)
      if not qs:
        raise InputError("add at least one query image")
      out = scratch.new("images")
      errors = []
      overlays, files = segment_images(
        seg, prompts, qs, out, ensemble=ensemble, seg_type=seg_type, errors=errors
      )
      return overlays, files or None, _done(len(overlays), errors)
    except Exception as e:  # shown in the page, never a stack trace
      return [], None, _message(e)

  def run_learned(prompt_file, queries):
    try:
      files = _files(prompt_file)
      if not files:
        raise InputError("upload a learned prompt file (.npz from incontext export-prompt)")
      qs = _files(queries)
      if not qs:
        raise InputError("add at least one query image")
      lp = seg.load_learned_prompt(files[0])
      out = scratch.new("learned")
      errors = []
      overlays, paths = segment_images(
        seg, [], qs, out, learned_prompt=lp, seg_type=lp.seg_type, errors=errors
      )
      return overlays, paths or None, _done(len(overlays), errors, " with the learned prompt")
    except Exception as e:
      return [], None, _message(e)

  def first_frame(path):
    if not path:
      return None, ""
    try:
      f = next(iter(videoio.read_frames(path, max_frames=1)))
      return {
        "background": f,
        "layers": [],
        "composite": f,
      }, "Paint the objects on the first frame (one colour per object), then run."
    except Exception as e:
      return None, _message(e)

  def run_video(path, ed, memory, progress=gr.Progress()):
    try:
      if not path:
        raise InputError("upload a video first")
      _, mask = editor_to_prompt(ed, None, "first frame")
      out = scratch.new("video")
      mp4, z = segment_video(
        seg.model,
        path,
        mask,
        out,
        memory=int(memory),
        max_frames=max_video_frames,
        progress=lambda d, t: t and progress((d, t), desc="frames", unit="frame"),
      )
      return mp4, z, "Done."
    except Exception as e:
      return None, None, _message(e)

  with gr.Blocks(title="incontext: in-context segmentation") as app:
    gr.Markdown(
      "## incontext: segment anything shown by example\nPaint the object on a "
      "prompt image (each brush colour = one object or class), add query images, "
      "run."
    )
    with gr.Tab("Images"):
      with gr.Row():
        with gr.Column():
          ed1 = editor("Prompt 1: upload, then paint the mask", "prompt1")
          # Masks are read as files by the commands' reader (imageio.load_mask).
          mask1 = gr.Image(
            label="…or upload its mask (optional)",
            type="filepath",
            image_mode=None,
            elem_id="mask1",
            height=160,
          )
          with gr.Accordion("Prompt 2 (optional)", open=False):
            ed2 = editor("Prompt 2", "prompt2")
            mask2 = gr.Image(
              label="Prompt 2 mask (optional)",
              type="filepath",
              image_mode=None,
              height=160,
              elem_id="mask2",
            )
        with gr.Column():
          queries = gr.File(
            label="Query images", file_count="multiple", file_types=["image"], elem_id="queries"
          )
          ensemble = gr.Radio(["feature", "spatial"], value="feature", label="Ensemble")
          seg_type = gr.Radio(["instance", "semantic"], value="instance", label="Seg type")
          run = gr.Button("Segment", variant="primary", elem_id="run")
          status = gr.Markdown(elem_id="status")
          gallery = gr.Gallery(
            label="Overlays",
            format="png",
            elem_id="overlays",
            columns=2,
            object_fit="contain",
            height="auto",
          )
          labels = gr.File(
            label="Label PNGs (palette = painted colours)", file_count="multiple", elem_id="labels"
          )
      for c, what in ((mask1, "prompt 1 mask"), (mask2, "prompt 2 mask")):
        _plain_upload_errors(c, what, gr)
      run.click(
        run_images,
        [ed1, mask1, ed2, mask2, queries, ensemble, seg_type],
        [gallery, labels, status],
        concurrency_limit=1,  # one call at a time: see outputs.Scratch
      )
      # A prompt upload the browser cannot read is refused at once, with a message.
      upload_error = gr.Textbox(elem_id="upload_error", visible="hidden")

      def refuse(value):  # the message, and a refused mask cleared (Segment would fail on it)
        where = (value or "").partition("|")[0]
        clear = lambda name: None if where == name else gr.update()
        return refused_upload(value), clear("prompt 1 mask"), clear("prompt 2 mask")

      upload_error.change(refuse, upload_error, [status, mask1, mask2])
      app.load(None, None, None, js=_UPLOAD_CHECK)
      if examples:
        ex_dir = scratch.new("examples")
        rows = procedural_examples(ex_dir)
        ex_prompt = gr.Image(visible=False, type="filepath")
        gr.Examples(
          [[p, m, [q]] for p, m, q in rows],
          [ex_prompt, mask1, queries],
          label="Procedural examples (for the quickstart model)",
        )
        ex_prompt.change(
          lambda p: {"background": p, "layers": [], "composite": p} if p else None, ex_prompt, ed1
        )
    with gr.Tab("Video"):
      with gr.Row():
        with gr.Column():
          vid = _plain_upload_errors(
            gr.Video(label="Video (MP4)", sources=["upload"], elem_id="video_in"), "video", gr
          )
          ved = editor("First frame: paint the objects", "first_frame")
          memory = gr.Slider(
            0, 16, value=8, step=1, label="Memory K (previous frames)", elem_id="memory"
          )
          vrun = gr.Button("Segment video", variant="primary", elem_id="video_run")
        with gr.Column():
          vstatus = gr.Markdown(elem_id="video_status")
          vout = gr.Video(label="Overlay", elem_id="video_out")
          vzip = gr.File(label="DAVIS-format masks (zip)", elem_id="video_zip")
      vid.change(first_frame, vid, [ved, vstatus])
      vrun.click(run_video, [vid, ved, memory], [vout, vzip, vstatus], concurrency_limit=1)
    with gr.Tab("Learned prompt"):
      with gr.Row():
        with gr.Column():
          lp_file = gr.File(label="Learned prompt (.npz)", file_types=[".npz"], elem_id="lp_file")
          lq = gr.File(
            label="Query images", file_count="multiple", file_types=["image"], elem_id="lp_queries"
          )
          lrun = gr.Button("Segment", variant="primary", elem_id="lp_run")
        with gr.Column():
          lstatus = gr.Markdown(elem_id="lp_status")
          lgal = gr.Gallery(
            label="Overlays",
            format="png",
            columns=2,
            object_fit="contain",
            height="auto",
            elem_id="lp_overlays",
          )
          lfiles = gr.File(label="Label PNGs", file_count="multiple")
      lrun.click(run_learned, [lp_file, lq], [lgal, lfiles, lstatus], concurrency_limit=1)
  app.incontext_scratch = scratch
  return app
