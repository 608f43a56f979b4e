#!/usr/bin/env bash
# Heap allocations per optimizer step, counted: every optimizer of the registry (but L-BFGS, whose
# step is a closure loop), in each state format it keeps and with bfloat16 parameters where it
# updates them, over 20 tensors on 2 threads. A counting malloc (tools/alloc/count_allocations.c)
# is preloaded under `optim bench`, which reads its counter around 10 steady-state steps.
#
# Fails when an optimizer whose loops are compiled per instruction set (the elementwise rules,
# LAMB, LARS, MARS, Lookahead over AdamW) allocates: a training step of those must not touch the
# heap. The rules that update whole tensors (Adafactor, Muon, SOAP) and Prodigy (its exact sums,
# ExactChunkSum, take their bins from the heap per chunk) are reported only: known, not yet zero.
#
#   tools/alloc/zero-allocations.sh [path/to/optim]     (default: a release build of optim)
set -euo pipefail
cd "$(dirname "$0")/../.."
optim="${1:-}"
if [[ -z "$optim" ]]; then
  swift build -c release --product optim >/dev/null
  optim="$(swift build -c release --show-bin-path)/optim"
fi
work=$(mktemp -d /tmp/optim-alloc.XXXXXX)
trap 'rm -rf "$work"' EXIT
cc -O2 -Wall -Werror -shared -fPIC -o "$work/libcount_allocations.so" tools/alloc/count_allocations.c

"$optim" list --json > "$work/list.jsonl"
python3 - "$optim" "$work" <<'PY'
import json, os, subprocess, sys

optim, work = sys.argv[1], sys.argv[2]
env = dict(os.environ, LD_PRELOAD=os.path.join(work, "libcount_allocations.so"))
# Not yet zero, and why (reported, not failed).
KNOWN = {"prodigy": "exact sums' bins allocated per chunk"}
failures, rows = [], []
for line in open(os.path.join(work, "list.jsonl")):
    info = json.loads(line)
    if info["requires_closure"]:
        continue
    must = (info["compiled_per_instruction_set"] or info["is_wrapper"]) and info["name"] not in KNOWN
    cases = [("--state-dtype", dtype) for dtype in info["state_dtypes"]]
    if "bfloat16" in info["state_dtypes"] and not info["updates_whole_tensors"]:
        cases.append(("--param-dtype", "bfloat16"))
    for option, value in cases:
        command = [optim, "bench", "--optimizer", info["name"], "--params", "204800", "--tensors", "20", "--threads", "2",
                   "--steps", "2", "--no-reference", "--json", option, value]
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            failures.append(f"{info['name']} {option} {value}: optim bench failed: {result.stderr.strip()}")
            continue
        swift = [json.loads(l) for l in result.stdout.splitlines() if l.startswith("{")]
        count = next((r.get("allocations_per_step") for r in swift if r["implementation"] == "swift"), None)
        if count is None:
            failures.append(f"{info['name']} {option} {value}: no allocation count (is the counting malloc preloaded?)")
            continue
        rows.append((info["name"], f"{option} {value}", count, must))
        if must and count != 0:
            failures.append(f"{info['name']} {option} {value}: {count:g} heap allocations per step")
print(f"{'optimizer':22s} {'case':28s} allocations/step")
for name, case, count, must in rows:
    note = "" if must else f"   (reported only: {KNOWN.get(name, 'whole-tensor rule')})"
    print(f"{name:22s} {case:28s} {count:g}{note}")
if failures:
    print("\n".join("FAIL " + f for f in failures), file=sys.stderr)
    sys.exit(1)
print(f"== {sum(1 for r in rows if r[3])} cases of per-instruction-set optimizers: 0 heap allocations per step")
PY
