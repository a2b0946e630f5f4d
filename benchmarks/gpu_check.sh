#!/usr/bin/env bash
# The GPU paths that the CPU-only development and CI machines never run, on one CUDA GPU, in under 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # prints one PASS/FAIL line per check, a summary, and the figures
#
# 1. setup: a venv with the CUDA builds (torch as vLLM pins it, vllm, bitsandbytes, liger-kernel). Without a
#    network set WHEELHOUSE=/path/to/wheels (made with `pip download` on a networked machine).
# 2. vllm-lora: a one-epoch job on the demo task, then `trainctl bench sweep` on vLLM's CUDA engine (base, every
#    checkpoint and the adapter as LoRA requests): held-out exact match base vs tuned.
# 3. flash-varlen: a packed batch through flash-attention's varlen path against the same examples padded (sdpa):
#    the loss must agree to 1e-3.
# 4. bnb-4bit, bnb-8bit: 20 QLoRA steps with the base weights quantised; loss finite and falling.
# 5. liger: 20 steps with Liger's fused linear cross-entropy (train.liger, on by default where installed).
# 6. nccl: a job as one torchrun process on the GPU (NCCL process group).
# 7. train-throughput: benchmarks/train_throughput.py, one round.
# Each check's output goes to $OUT/<check>.log (default gpu_check_out/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
VENV=${VENV:-.venv-gpu}
mkdir -p "$OUT"
PY="$VENV/bin/python"
TC="$VENV/bin/trainctl"
declare -a RESULTS=()
START=$SECONDS

check() {  # check NAME TIMEOUT_S COMMAND...: run it, keep its log, record PASS/FAIL with its time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        RESULTS+=("PASS $name ($((SECONDS - t0)) s)")
    else
        RESULTS+=("FAIL $name ($((SECONDS - t0)) s, exit $?; see $OUT/$name.log)")
    fi
    echo "${RESULTS[-1]}"
}

nvidia-smi -L || { echo "no NVIDIA GPU: nothing to check"; exit 1; }

setup() {
    python3 -m venv "$VENV"
    local src=()
    if [ -n "${WHEELHOUSE:-}" ]; then src=(--no-index --find-links "$WHEELHOUSE"); fi
    # No constraints.txt: it pins the CPU torch; vLLM's CUDA build brings the torch it was built for.
    "$PY" -m pip install --quiet "${src[@]}" -e ".[dev,vllm]" bitsandbytes liger-kernel flash-attn
}
check setup 300 setup

H="$OUT/home"
rm -rf "$H"
mkdir -p "$H"
check vllm-lora 150 bash -c "
    '$TC' train examples/demo_reverse.jsonl --home '$H' --epochs 1 &&
    '$TC' bench sweep --job 1 --home '$H' --max-tokens 24 --backend vllm &&
    '$TC' bench sweep --job 1 --home '$H' --max-tokens 24 --json > '$OUT/sweep.json'"

check flash-varlen 60 "$PY" - <<'EOF'
# The packed batch (one row, the varlen kernel given the sequence boundaries) against the same examples padded.
import torch
from transformers import AutoModelForCausalLM

from daemon.models.cache import SMOLLM2_135M, ensure_packaged
from daemon.models.loading import load_tokenizer
from daemon.training.packing import PackedCollator
from tests.test_packing import _examples

path = str(ensure_packaged(SMOLLM2_135M))
tok = load_tokenizer(path, None)
examples = _examples(tok)
losses = {}
for impl, flash in (("flash_attention_2", True), ("sdpa", False)):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation=impl).cuda()
    batch = {k: v.cuda() for k, v in PackedCollator(tok.pad_token_id, flash)(examples).items()
             if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        losses[impl] = model(**batch).loss.float().item()
print(losses)
assert abs(losses["flash_attention_2"] - losses["sdpa"]) <= 1e-3, losses
EOF

for bits in 4bit 8bit; do
    check "bnb-$bits" 90 bash -c "
        printf '[train]\nquantization = \"$bits\"\nliger = false\n' > '$OUT/$bits.toml' &&
        rm -rf '$OUT/home-$bits' && mkdir -p '$OUT/home-$bits' && cp '$OUT/$bits.toml' '$OUT/home-$bits/trainctl.toml' &&
        '$TC' train examples/demo_reverse.jsonl --home '$OUT/home-$bits' --max-steps 20 &&
        grep -q '$bits' '$OUT/home-$bits/data/runs/job-00001/config.json'"
done

check liger 90 bash -c "
    rm -rf '$OUT/home-liger' && mkdir -p '$OUT/home-liger' &&
    '$TC' train examples/demo_reverse.jsonl --home '$OUT/home-liger' --max-steps 20 &&
    grep -qi 'liger' '$OUT/home-liger/data/runs/job-00001/config.json'"

check nccl 120 bash -c "
    rm -rf '$OUT/home-nccl' && mkdir -p '$OUT/home-nccl' &&
    '$TC' train examples/demo_reverse.jsonl --home '$OUT/home-nccl' --max-steps 20 --nproc 1 --gpus-per-job 1 &&
    grep -qi 'nccl' '$OUT/home-nccl/data/logs/'*.log '$OUT/home-nccl/data/runs/job-00001/config.json'"

check train-throughput 180 "$PY" benchmarks/train_throughput.py --rounds 1

echo
echo "gpu_check: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1), $((SECONDS - START)) s"
printf '%s\n' "${RESULTS[@]}"
grep -h "exact_match\|tok/s\|ratio" "$OUT"/*.log "$OUT/sweep.json" 2>/dev/null | tail -40
