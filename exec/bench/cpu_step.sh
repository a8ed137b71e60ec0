#!/usr/bin/env bash
# Where the CPU training step's time goes: runs glamexec train on this host and prints each op's share
# (scripts/op_shares.py). The default is glam-0.1b-64e's first 2 layers (one dense block, one MoE block
# of 64 experts) at 4,096 tokens and sequence 1,024, with an 8,192-piece vocabulary: with the paper's
# 256K the logits alone would take most of a CPU step and hide the blocks.
#
# usage: exec/bench/cpu_step.sh [--build DIR] [--model ID_OR_FILE] [--vocab N] [ARGS for glamexec train...]
#   --build DIR    the CMake build with bin/glamexec (default: build/)
#   --model M      the model (default glam-0.1b-64e); --vocab N replaces its vocabulary size (default 8192,
#                  0 keeps the model's)
#   other arguments go to glamexec train (default: --layers 2 --batch-tokens 4096 --steps 4)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=$ROOT/build
MODEL=glam-0.1b-64e
VOCAB=8192
ARGS=()
while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$(cd "$2" && pwd); shift ;;
    --model) MODEL=$2; shift ;;
    --vocab) VOCAB=$2; shift ;;
    *) ARGS+=("$1") ;;
  esac
  shift
done
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--layers 2 --batch-tokens 4096 --steps 4)
[ -x "$BUILD/bin/glamexec" ] || { echo "cpu_step.sh: $BUILD/bin/glamexec not built" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model_arg=$MODEL
if [ "$VOCAB" != 0 ]; then
  source=$MODEL
  [ -f "$source" ] || source=$ROOT/models/$MODEL.toml
  [ -f "$source" ] || { echo "cpu_step.sh: no model file for $MODEL" >&2; exit 2; }
  sed -e "s/^id = \"\(.*\)\"/id = \"\1-vocab$VOCAB\"/" -e "s/^vocab_size = .*/vocab_size = $VOCAB/" "$source" >"$tmp/model.toml"
  model_arg=$tmp/model.toml
fi
"$BUILD/bin/glamexec" train --device cpu --model "$model_arg" --random-tokens --quiet --record "$tmp/record.json" "${ARGS[@]}"
python3 "$ROOT/scripts/op_shares.py" --top 20 "$tmp/record.json"
