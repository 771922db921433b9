#!/usr/bin/env bash
# N camjax processes on this machine (CPU, gloo collectives): the same code path as a TPU pod or a multi-GPU cluster.
#   launch/local_multiprocess.sh N [camjax.main flags...]
#   e.g. launch/local_multiprocess.sh 2 --config=configs/cameractrl2.py:test --workdir=runs/mp
# Each process gets 1 CPU device; the global batch (config.data.batch_size) is split over the processes.
# Environment: CAMJAX_PORT (coordinator port, default 12355), PYTHON (default python).
set -euo pipefail
N=${1:?usage: local_multiprocess.sh N [flags...]}
shift
PORT=${CAMJAX_PORT:-12355}
PY=${PYTHON:-python}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup INT TERM
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu "$PY" -m camjax.main --coordinator="127.0.0.1:${PORT}" --num_processes="$N" --process_id="$i" "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
