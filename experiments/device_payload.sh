#!/usr/bin/env bash
# What experiments/h200_inference.py and experiments/h200_train.py need on a GPU machine that
# has no network and no ../shared: run once in the checkout that the device run sends, then
# name `.device` and `.whl` in the run's carry list (docs/results.md has the command).
#
#   .device/data/coco128_seg, .device/data/weizmann_horse   (real photos and masks, ~25 MB:
#       the `label` folder (128 COCO + 100 horse photos), the few-shot fixture, the horse prompt
#       and the training pipeline's real subset)
#   .whl/*.whl   the packages the H200 image lacks (ml-collections, grain and its array-record and
#       portpicker, pycocotools for `label`'s COCO file) and the repo's pins of flax and optax,
#       for CPython 3.12 on manylinux x86-64
#
# Both folders are added to .git/info/exclude (never committed); the total is printed and must
# stay under the 64 MiB a run carries. Rerunning is safe: it replaces what it wrote before.
#
#   bash experiments/device_payload.sh [SHARED_DATA_DIR]   # default: ../shared/data
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data=${1:-$root/../shared/data}
cd "$root"
for d in coco128_seg weizmann_horse; do
  if [ ! -d "$data/$d" ]; then
    echo "device_payload.sh: $data/$d: no such folder (give the shared data folder as the argument)" >&2
    exit 2
  fi
done
git_dir=$(git rev-parse --git-common-dir)
mkdir -p "$git_dir/info"
for p in /.device/ /.whl/; do
  grep -qxF "$p" "$git_dir/info/exclude" 2>/dev/null || echo "$p" >>"$git_dir/info/exclude"
done

rm -rf .device/data && mkdir -p .device/data
cp -r "$data/coco128_seg" "$data/weizmann_horse" .device/data/

# One version of each; the H200 image's list is /work/.library/device/KINDS.md.
WHEELS=(ml-collections==1.1.0 pycocotools==2.0.11 grain==0.2.18 array-record==0.8.6
  portpicker==1.6.0 flax==0.12.8 optax==0.2.8)
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
n=$(ls .whl/*.whl | wc -l)
if [ "$n" -ne "${#WHEELS[@]}" ]; then
  echo "device_payload.sh: expected ${#WHEELS[@]} wheels in .whl, found $n" >&2
  exit 1
fi
du -sh .device .whl
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
carried=$(du -cb .device .whl | tail -1 | cut -f1)
total=$((tracked + carried))
echo "tracked files + .device + .whl: $((total / 1048576)) MiB (the limit is 64 MiB)"
if [ "$total" -gt $((60 * 1048576)) ]; then
  echo "device_payload.sh: over 60 MiB; carry less" >&2
  exit 1
fi
