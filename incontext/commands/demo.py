"""`incontext demo --checkpoint CKPT [--host 127.0.0.1] [--port 7860]`: the local web app.

Serves `incontext.app` (Gradio; `pip install 'incontext[demo]'`) on HOST:PORT, by default on
this machine only. Images, Video and Learned-prompt tabs; see `incontext/app.py`.
"""

from incontext import params_dir
from incontext.errors import UserError


def register(sub):
  p = sub.add_parser(
    "demo",
    help="local web app (Gradio): paint a prompt mask, segment images, videos, learned prompts",
  )
  p.add_argument("--checkpoint", required=True, help="incontext params directory")
  p.add_argument(
    "--host",
    default="127.0.0.1",
    help="address to serve on (default "
    "127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)",
  )
  p.add_argument("--port", type=int, default=7860)
  p.add_argument(
    "--max-video-frames",
    type=int,
    default=300,
    help="longest video accepted by the Video tab (frames)",
  )
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--no-examples", action="store_true", help="hide the procedural examples")
  p.set_defaults(func=run)


def check(args) -> None:
  """Settings, the checkpoint path and the Gradio extra, before jax is imported."""
  if not 0 < args.port < 65536:
    raise UserError(f"--port {args.port}: expected 1..65535")
  if args.max_video_frames < 2:
    raise UserError(f"--max-video-frames {args.max_video_frames}: expected >= 2")
  args.checkpoint = params_dir.for_command(args.checkpoint)
  try:
    import gradio  # noqa: F401
  except ModuleNotFoundError:
    raise UserError("the demo needs Gradio: pip install 'incontext[demo]'") from None


def run(args) -> int:
  # imported on demand, so that `incontext --help` loads no jax (see incontext/cli.py)
  from incontext import app
  from incontext.inference import Segmenter

  seg = Segmenter.from_checkpoint(args.checkpoint, dtype=args.dtype)
  demo = app.build_app(seg, max_video_frames=args.max_video_frames, examples=not args.no_examples)
  print(f"incontext demo: serving {args.checkpoint} on http://{args.host}:{args.port}", flush=True)
  demo.queue().launch(
    server_name=args.host, server_port=args.port, show_error=False, footer_links=[]
  )
  return 0
