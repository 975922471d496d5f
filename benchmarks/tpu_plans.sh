#!/usr/bin/env bash
# The per-chip table of docs/cloud_tpu.md: each mT5 size x {promot_stage2, promot_stage1,
# finetune} compiled by `promot-jax plan` for the paper's 64 TPU chips (v4-128) on each
# size's T5X mesh (gin/t5x/sizes/<size>.gin). One JSON per case in docs/tpu_plans/; cases
# already there are kept, so the table (hours of compiling on 2 cores) fills in over runs.
# The prompted decoder is compiled with promot_stage2 (it is the larger of the two).
# Needs libtpu: pip install -e ".[tpu]".  SIZES="xl xxl" SLICE=v5p-128 choose other cases;
# PARAM_DTYPE=bfloat16 plans a bfloat16 trunk (prompt and optimizer state float32), in
# <case>-bfloat16.json files beside the float32 ones.
set -uo pipefail
cd "$(dirname "$0")/.."
SLICE=${SLICE:-v4-128}
PARAM_DTYPE=${PARAM_DTYPE:-float32}
SUFFIX=
[ "$PARAM_DTYPE" = float32 ] || SUFFIX="-$PARAM_DTYPE"
OUT=docs/tpu_plans
mkdir -p "$OUT"
for size in ${SIZES:-xxl xl large base small}; do
  for method in promot_stage2 promot_stage1 finetune; do
    file="$OUT/$size-$method-$SLICE$SUFFIX.json"
    [ -e "$file" ] && continue
    decode=--no_decode
    [ "$method" = promot_stage2 ] && decode=
    start=$(date +%s)
    python -m promot_jax.cli plan --size "$size" --method "$method" --slice "$SLICE" \
      --param_dtype "$PARAM_DTYPE" --no_search $decode --json "$file"
    echo "$size $method $PARAM_DTYPE: exit $?, $(( $(date +%s) - start )) s to compile, load: $(uptime)"
  done
done
# The table in docs/cloud_tpu.md, between its plan-table markers, from every JSON there.
python - <<'PY'
import json, pathlib, re
from promot_jax import tpu_plan
doc = pathlib.Path("docs/cloud_tpu.md")
rows = [json.loads(p.read_text()) for p in sorted(pathlib.Path("docs/tpu_plans").glob("*.json"))]
table = tpu_plan.markdown_table(rows) + "\n" if rows else ""
text = re.sub(r"(<!-- plan-table:[^>]*-->\n).*?(<!-- /plan-table -->)",
              lambda m: m.group(1) + table + m.group(2), doc.read_text(), flags=re.S)
doc.write_text(text)
PY
