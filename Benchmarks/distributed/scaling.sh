#!/usr/bin/env bash
# Training speed of `train --distributed` on this machine, next to one process: each rank
# bound to its own core stands for a machine of one core, so that 2 ranks on 2 cores show
# what 2 machines would (over shared memory instead of a network). Runs every configuration
# twice, alternating, and prints samples/s over training (epoch 1) and each rank's bytes sent
# per batch and seconds waiting, from the metrics file. Also writes the one-core trace that
# Benchmarks/distributed/model.py reads.
#
#   Benchmarks/distributed/scaling.sh [MODEL] [LIMIT] [FLAGS...]   (default: cnn 6400)
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-cnn}
limit=${2:-6400}
shift $(($# > 2 ? 2 : $#))
train=${TRAIN:-.build/release/train}
out=${OUT:-/tmp/sigprop-scaling}
rm -rf "$out" && mkdir -p "$out"
export SIGPROP_BACKEND=cpu
flags=(--model "$model" --limit "$limit" --validation 0 --epochs 1 --overwrite "$@")
mpi=(mpirun --allow-run-as-root --oversubscribe)

run() {
    local name=$1 round=$2
    shift 2
    "$@" "${flags[@]}" --checkpoint-dir "$out/$name-ck" --metrics "$out/$name-$round.jsonl" \
        > "$out/$name-$round.log" 2>&1
    python3 - "$out/$name-$round.jsonl" "$name" <<'PY'
import json, sys
m = json.loads(open(sys.argv[1]).readlines()[-1])
ranks = "".join(
    f"  rank {r}: {b / 2**20:.2f} MiB/batch, waited {w:.1f} s"
    for r, (b, w) in enumerate(zip(m.get("rank_bytes_per_batch", []), m.get("rank_seconds_waiting", []))))
print(f"{sys.argv[2]:12s} {m['samples_per_second']:8.1f} samples/s{ranks}")
PY
}

taskset -c 0 "$train" "${flags[@]}" --schedule sequential --trace "$out/trace-1core.json" \
    --checkpoint-dir "$out/trace-ck" > "$out/trace.log" 2>&1
"$train" "${flags[@]}" --describe > "$out/describe.txt" 2>&1
for round in 1 2; do
    run one-1core $round taskset -c 0 "$train"
    run pipeline-2 $round "${mpi[@]}" -np 2 --bind-to core "$train" --distributed pipeline
    run data-2 $round "${mpi[@]}" -np 2 --bind-to core "$train" --distributed data
    run one-2cores $round "$train"
    run pipeline-4 $round "${mpi[@]}" -np 4 --bind-to none "$train" --distributed pipeline
    run data-4 $round "${mpi[@]}" -np 4 --bind-to none "$train" --distributed data
done
echo "trace: $out/trace-1core.json, describe: $out/describe.txt"
