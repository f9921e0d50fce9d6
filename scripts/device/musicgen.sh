#!/usr/bin/env bash
# MusicGen on one GPU, through burn's wgpu backend on Vulkan: the checks of the issue "Tune a
# real text-to-music model", item 8, EnCodec's decoder and twenty LoRA steps ("Hear it"), in
# under 10 minutes, one summary line each.
#
# Prepare on a CPU machine with the registries (the GPU machines have none):
#   cargo build --release --features vulkan && mkdir -p target/device \
#     && strip -o target/device/musicrl target/release/musicrl && xz -f target/device/musicrl
#   (cd target/device && apt-get download libvulkan1)   # the Vulkan loader, if the GPU host lacks it
# then run this script there with target/device carried beside the working tree (the stripped
# binary is ~138 MB, ~26 MB as .xz: only the compressed one fits what a device call carries).
# The CPU half of every comparison is the same binary on "cpu", so nothing but the device differs.
set -uo pipefail
cd "$(dirname "$0")/../.."

BIN=${BIN:-target/device/musicrl}
OUT=${OUT:-$(mktemp -d)}
FIXTURE=policy/tests/fixtures/musicgen/tiny
CAPTION="a slow jig in d major"
mkdir -p "$OUT"
if [ ! -x "$BIN" ] && [ -f "$BIN.xz" ]; then xz -dkf "$BIN.xz" && chmod +x "$BIN"; fi
say() { printf '%s\n' "$*" | tee -a "$OUT/summary.txt"; }

# --- the Vulkan loader and the driver's ICD -------------------------------------------------
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  root=target/device/root
  for deb in target/device/*.deb; do [ -e "$deb" ] && dpkg-deb -x "$deb" "$root"; done
  export LD_LIBRARY_PATH="$PWD/$root/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
if ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  # The NVIDIA driver's Vulkan entry point is libGLX_nvidia; describe it to the loader.
  lib=$(ldconfig -p | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
  if [ -n "$lib" ]; then
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3"}}\n' "$lib" \
      > "$OUT/nvidia_icd.json"
    export VK_ICD_FILENAMES="$OUT/nvidia_icd.json"
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
  | sed 's/^/gpu: /' | tee -a "$OUT/summary.txt"

# --- 1. the device's first tensor operation ------------------------------------------------
if "$BIN" --set actor.device=vulkan:0 policy generate --policy "$FIXTURE" --caption "$CAPTION" \
    --frames 8 --greedy --out "$OUT/gpu-greedy.json" 2>"$OUT/probe.log"; then
  say "device: vulkan:0 runs ($(grep -o 'compute device.*' "$OUT/probe.log" | head -1))"
else
  say "device: vulkan:0 FAILED: $(tail -3 "$OUT/probe.log" | tr '\n' ' ')"
  exit 1
fi

# --- 2. parity: the fixture on the GPU against the same binary on the CPU --------------------
"$BIN" --set actor.device=cpu policy generate --policy "$FIXTURE" --caption "$CAPTION" \
  --frames 8 --greedy --out "$OUT/cpu-greedy.json" 2>/dev/null
for dev in cpu vulkan:0; do
  "$BIN" --set actor.device="$dev" policy score --policy "$FIXTURE" --caption "$CAPTION" \
    --codes "$OUT/cpu-greedy.json" > "$OUT/score-${dev%%:*}.json" 2>/dev/null
done
python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
out = sys.argv[1]
cpu = json.load(open(f"{out}/score-cpu.json"))["logprob"]
gpu = json.load(open(f"{out}/score-vulkan.json"))["logprob"]
worst = max(abs(a - b) for ra, rb in zip(cpu, gpu) for a, b in zip(ra, rb))
same = json.load(open(f"{out}/cpu-greedy.json"))["codes"] == json.load(open(f"{out}/gpu-greedy.json"))["codes"]
print(f"parity: log-probabilities within {worst:.2e} of the CPU's (goal 1e-4), greedy codes {'equal' if same else 'DIFFER'}")
EOF

# --- 3. the musicgen-small-shape bench (random weights written by transformers) --------------
folder=$(python3 scripts/bench_musicgen.py --shape small --write-only --folder "$OUT/musicgen-small-random" 2>/dev/null | tail -1)
if [ -d "$folder" ]; then
  timeout 300 "$BIN" --set learner.device=vulkan:0 bench --workloads musicgen --musicgen "$folder" \
    --musicgen-frames 50 --batches 1,8 --iters 2 --musicgen-update-batch 8 \
    --json "$OUT/bench.json" >/dev/null 2>"$OUT/bench.log"
  python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, sys
try:
    ms = json.load(open(f"{sys.argv[1]}/bench.json"))["musicgen"]["measurements"]
except Exception as e:
    print(f"bench: no result ({e}); see bench.log"); sys.exit()
parts = [f"{m['kind']} b{m['batch']}{' cfg' if m['guidance'] else ''} "
         + (f"{m['median_seconds']:.2f} s" if m['kind'] == 'update' else f"{m['frames_per_second']:.1f} fr/s")
         for m in ms]
print("bench (sample-burn and update on vulkan:0; sample = the CPU engine): " + "; ".join(parts))
EOF
else
  say "bench: no random folder (transformers missing?)"
fi

# --- 4. twenty steps of the whole loop on the GPU --------------------------------------------
if timeout 180 "$BIN" --config config/musicgen-tiny.toml \
    --set learner.device=vulkan:0 --set actor.device=vulkan:0 --set actor.engine=burn \
    local --steps 20 >"$OUT/local.json" 2>"$OUT/local.log"; then
  say "local: $(head -2 "$OUT/local.json" | tr '\n' ' ')"
else
  say "local: FAILED: $(tail -3 "$OUT/local.log" | tr '\n' ' ')"
fi
# --- 5. EnCodec's decoder on the GPU against the CPU (the graded fixture codec, 10 s) --------
python3 -c "import json; print(json.dumps({'codes': [[(7 * t + 13 * k) % 64 for t in range(500)] for k in range(4)]}))" \
  > "$OUT/codec-codes.json"
ok=1
for dev in cpu vulkan:0; do
  "$BIN" --set reward.device="$dev" codec decode --codec policy/tests/fixtures/encodec/tiny-graded \
    --codes "$OUT/codec-codes.json" --out "$OUT/codec-${dev%%:*}.wav" >"$OUT/codec-${dev%%:*}.json" \
    2>"$OUT/codec-${dev%%:*}.log" || ok=0
done
if [ "$ok" = 1 ]; then
  python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import json, struct, sys
out = sys.argv[1]
def samples(path):
    data = open(path, "rb").read(); pos = 12
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], "little")
        if tag == b"data":
            return struct.unpack(f"<{size // 4}f", data[pos + 8:pos + 8 + size])
        pos += 8 + size + (size & 1)
cpu, gpu = samples(f"{out}/codec-cpu.wav"), samples(f"{out}/codec-vulkan.wav")
worst = max(abs(a - b) for a, b in zip(cpu, gpu))
t = {d: json.load(open(f"{out}/codec-{d}.json"))["decode_seconds"] for d in ("cpu", "vulkan")}
print(f"codec: vulkan:0 decodes within {worst:.2e} of the CPU (goal 1e-4); {t['vulkan']:.3f} s on the GPU, {t['cpu']:.3f} s on the CPU")
EOF
else
  say "codec: FAILED: $(tail -3 "$OUT/codec-vulkan.log" | tr '\n' ' ')"
fi
# --- 6. twenty LoRA steps at musicgen-small's shape on the GPU ------------------------------
# The random musicgen-small of step 3, rank 16 on q_proj and v_proj, a token reward (no
# scorer servers here): the learner trains the adapters only and broadcasts them.
if [ -d "$folder" ]; then
  if timeout 400 "$BIN" --config config/musicgen-small.toml --set policy.folder="$folder" \
      --set policy.frames=50 --set policy.max_tokens=200 --set policy.lora.rank=16 \
      --set 'reward.components=[{kind="token-fraction", target_below=512}]' \
      --set learner.learning_rate=0.0001 --set learner.device=vulkan:0 --set actor.device=vulkan:0 \
      --set actor.engine=burn local --steps 20 --actors 1 --out "$OUT/lora" \
      >"$OUT/lora.json" 2>"$OUT/lora.log"; then
    say "lora: $(head -2 "$OUT/lora.json" | tr '\n' ' '); checkpoint $(du -b "$OUT"/lora/checkpoints/step-*/policy.bpk | tail -1 | cut -f1) bytes"
  else
    say "lora: FAILED: $(tail -3 "$OUT/lora.log" | tr '\n' ' ')"
  fi
fi
say "files: $OUT"
