#!/usr/bin/env bash
# Stage 8 of the recipes: the averaged model exported for deployment, as
# ${exp_dir}/models/final.zip (TorchScript) and, with --onnx auto when onnx and
# onnxruntime are installed, final.onnx. An export newer than the model is kept.
#
#   tools/recipe/export_model.sh --exp_dir exp/X --checkpoint exp/X/models/avg_model.pt [--onnx false]

exp_dir=
checkpoint=
onnx=auto  # auto: also ONNX when onnx and onnxruntime import; false: TorchScript only

. tools/parse_options.sh || exit 1
. path.sh
. tools/recipe_helpers.sh
set -eo pipefail

case "${onnx}" in
  auto|false) ;;
  *) echo "$0: --onnx must be auto or false, got '${onnx}'" >&2; exit 1 ;;
esac
if [ ! -f "${checkpoint}" ]; then
  echo "$0: --checkpoint ${checkpoint:-(empty)} is not a file: average the model first (stage 4)" >&2
  exit 1
fi

models=${exp_dir}/models
if up_to_date "${models}/final.zip" "${checkpoint}"; then
  echo "${models}/final.zip is up to date"
else
  python -m wespeaker_py.bin.export_jit \
    --config "${exp_dir}/config.yaml" \
    --checkpoint "${checkpoint}" \
    --output_file "${models}/final.zip"
fi

# final.onnx not exported this time: one older than the checkpoint is the earlier
# model's, and is removed rather than left to be deployed beside the new final.zip
drop_stale_onnx() {
  if [ -e "${models}/final.onnx" ] && ! up_to_date "${models}/final.onnx" "${checkpoint}"; then
    rm -f "${models}/final.onnx"
    echo "removed ${models}/final.onnx: it was exported from an earlier model than ${checkpoint}"
  fi
}

if [ "${onnx}" == "false" ]; then
  drop_stale_onnx
elif ! python -c "import onnx, onnxruntime" 2>/dev/null; then
  echo "onnx/onnxruntime are not installed (pip install -e .[export]): no ONNX export"
  drop_stale_onnx
elif up_to_date "${models}/final.onnx" "${checkpoint}"; then
  echo "${models}/final.onnx is up to date"
else
  python -m wespeaker_py.bin.export_onnx \
    --config "${exp_dir}/config.yaml" \
    --checkpoint "${checkpoint}" \
    --output_model "${models}/final.onnx"
fi
