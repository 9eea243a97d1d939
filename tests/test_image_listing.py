"""The one image lister, `imageio.list_images` (`segment --query`, `label --images`): which
files a folder or a glob pattern gives (hidden names, FIFOs, extensions in any case, links,
sub-folders), what a file named directly gives, and the one-line errors."""

import os

import pytest

from incontext import imageio


def _touch(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(b"x")
  return str(path)


@pytest.fixture
def folder(tmp_path):
  """A folder with images in several cases of extension and the things that are not listed."""
  d = tmp_path / "imgs"
  for n in ("b.jpg", "A.PNG", "c.JpEg", "d.webp", "e.gif", "f.tif", "g.bmp"):
    _touch(d / n)
  for n in (".hidden.jpg", "._b.jpg", ".DS_Store", "notes.txt", "noext", "h.jpg.part"):
    _touch(d / n)
  (d / "sub").mkdir()
  _touch(d / "sub" / "s.jpg")  # not listed from the folder (not recursive), found by **
  _touch(d / ".cache" / "x.jpg")  # a hidden folder: ** does not enter it
  (d / "dir.jpg").mkdir()  # a folder named like an image is not an image
  os.symlink(d / "b.jpg", d / "link.jpg")  # a link to an image is one
  os.symlink(d / "missing.jpg", d / "broken.jpg")  # a broken link is not
  if hasattr(os, "mkfifo"):
    os.mkfifo(d / "fifo.png")  # opening it would block: never listed
  return d


LISTED = ["A.PNG", "b.jpg", "c.JpEg", "d.webp", "e.gif", "f.tif", "g.bmp", "link.jpg"]


def test_folder_lists_its_visible_regular_image_files_sorted(folder):
  assert imageio.list_images([folder]) == [str(folder / n) for n in LISTED]
  # one path (not a list) is one item
  assert imageio.list_images(str(folder), what="") == [str(folder / n) for n in LISTED]


def test_glob_applies_the_same_rule_and_double_star_recurses(folder):
  assert imageio.list_images([str(folder / "*")]) == [str(folder / n) for n in LISTED]
  assert imageio.list_images([str(folder / "*.jpg")]) == [
    str(folder / n) for n in ("b.jpg", "link.jpg")
  ]
  assert imageio.list_images([str(folder / "**" / "*.jpg")]) == [
    str(folder / n) for n in ("b.jpg", "link.jpg", "sub/s.jpg")
  ]
  # a pattern naming hidden files still skips them
  with pytest.raises(imageio.InputError, match=r"\.\*: no query images match this pattern"):
    imageio.list_images([str(folder / ".*")])


def test_items_keep_their_order_and_a_named_file_is_kept_as_given(folder, tmp_path):
  named = _touch(tmp_path / "plain.dat")  # named directly: kept whatever its extension
  got = imageio.list_images([named, str(folder / "g.bmp"), str(folder / "*.gif")])
  assert got == [named, str(folder / "g.bmp"), str(folder / "e.gif")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_a_fifo_named_directly_is_refused(folder):
  with pytest.raises(imageio.InputError, match=r"fifo.png: not a regular file"):
    imageio.list_images([folder / "fifo.png"])


def test_errors_name_the_item(folder, tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  _touch(empty / "readme.txt")
  cases = [
    ([empty], "query", f"{empty}: folder has no query images (.jpg, "),
    ([empty], "", f"{empty}: folder has no images (.jpg, "),
    ([str(folder / "*.txt")], "query", "*.txt: no query images match this pattern"),
    ([str(tmp_path / "nope.jpg")], "query", "nope.jpg: no such query image file or folder"),
    ([str(tmp_path / "none") + "/"], "", "none/: no such image file or folder"),
  ]
  for items, what, want in cases:
    with pytest.raises(imageio.InputError) as e:
      imageio.list_images(items, what=what)
    assert want in str(e.value) and "\n" not in str(e.value), (items, str(e.value))


def test_video_frames_follow_the_same_rule(folder):
  """`segment-video`'s frame folder lists what `list_images` lists from that folder (minus the
  excluded first mask), in the same order."""
  from incontext import video

  want = imageio.list_images(str(folder))
  assert [os.path.basename(p) for p in want] == LISTED
  assert video.list_frames(str(folder)) == want
  mask = str(folder / "g.bmp")
  assert video.list_frames(str(folder), exclude=[mask]) == [p for p in want if p != mask]
