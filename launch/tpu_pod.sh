#!/usr/bin/env bash
# Run the camjax main job on every worker of a Cloud TPU VM pod slice (one process per host; jax.distributed
# reads the TPU environment). The repository must be at the same path on every worker (e.g. cloned there).
#   launch/tpu_pod.sh TPU_NAME ZONE [camjax.main flags...]
#   e.g. launch/tpu_pod.sh my-v5p-64 us-east5-a --config=configs/cameractrl2.py:wan1_3b --workdir=gs://bucket/run1
# Environment: CAMJAX_DIR (repository path on the workers, default ~/camjax), PROJECT (gcloud project, optional).
set -euo pipefail
TPU=${1:?usage: tpu_pod.sh TPU_NAME ZONE [flags...]}
ZONE=${2:?usage: tpu_pod.sh TPU_NAME ZONE [flags...]}
shift 2
DIR=${CAMJAX_DIR:-~/camjax}
ARGS=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} --worker=all \
  --command="cd $DIR && python -m camjax.main --distributed$ARGS"
