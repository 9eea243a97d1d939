"""Canvas conventions shared by the model, the data pipeline and inference.

A sample is a vertical canvas of two equal halves: the prompt on top, the query at the
bottom (docs/design.md#canvas). Images and colour targets are both ImageNet-normalised,
channels-last:

  image   [B, 2H, W, 3] float32   prompt image over query image
  target  [B, 2H, W, 3] float32   prompt colour mask over query colour mask (or anything finite)
  mask    [B, L] bool             patch mask over the (2H/p) x (W/p) grid, row-major; True = hidden
  valid   [B, 2H, W] float32      1 where the loss counts (0 = ignore)
  seg_type [B] int32              0 semantic ("cls" token), 1 instance, other = no type token
"""

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

# The palette of binary (one-object) tasks: 0 background black, 1 foreground white. Read-only:
# copy it to change it.
BINARY_PALETTE = np.array([[0, 0, 0], [255, 255, 255]], np.uint8)
BINARY_PALETTE.flags.writeable = False

SEMANTIC, INSTANCE = 0, 1
SEG_TYPES = {"semantic": SEMANTIC, "instance": INSTANCE}


def normalize(x_uint8_or_01, *, from_uint8: bool = True):
  """uint8 (or [0,1] float) RGB -> ImageNet-normalised float32."""
  x = np.asarray(x_uint8_or_01, np.float32)
  if from_uint8:
    x = x / 255.0
  return (x - IMAGENET_MEAN) / IMAGENET_STD


def denormalize(x) -> np.ndarray:
  """ImageNet-normalised -> float RGB in [0, 255] (clipped), as the official code does."""
  x = np.asarray(x, np.float32)
  return np.clip((x * IMAGENET_STD + IMAGENET_MEAN) * 255.0, 0.0, 255.0)


def query_half_mask(grid_hw: tuple[int, int]) -> np.ndarray:
  """[L] bool: the bottom half of a (gh, gw) token grid (the inference mask)."""
  gh, gw = grid_hw
  m = np.zeros((gh, gw), bool)
  m[gh // 2 :] = True
  return m.reshape(-1)


def build_palette(num_labels: int) -> np.ndarray:
  """[num_labels + 1, 3] uint8 palette: 0 black, then HF/Painter's base-b colours."""
  base = int(num_labels ** (1 / 3)) + 1
  margin = 256 // base
  colors = [(0, 0, 0)]
  for k in range(num_labels):
    colors.append(
      (
        255 - (k // base**2) * margin,
        255 - ((k % base**2) // base) * margin,
        255 - (k % base) * margin,
      )
    )
  return np.array(colors, np.uint8)
