#!/usr/bin/env bash
# Entrypoint of Dockerfile.train.
#   repro [-S key=value ...]   the whole pipeline  (dvc exp run -S ...)
#   train [-S key=value ...]   the train stage and what it needs (dvc exp run train -S ...)
#   <any other command>        run it as is (e.g. `dvc dag`, `bash`)
# Environment: DVC_PULL=1 pulls the raw snapshot and cached outputs from DVC_REMOTE first (default 1),
# DVC_PUSH=1 pushes the outputs to DVC_REMOTE at the end (default 0), DVC_REMOTE (default gcs).
set -euo pipefail

mode="${1:-repro}"
if [[ $# -gt 0 ]]; then shift; fi
remote="${DVC_REMOTE:-gcs}"

case "$mode" in
  repro) targets=() ;;
  train) targets=(train) ;;
  *) exec "$mode" "$@" ;;
esac

# DVC experiments need a git commit; the image carries the working tree without .git.
if ! git rev-parse --git-dir >/dev/null 2>&1; then
  git init -q
  git add -A
  git -c user.name=arxiv-embed -c user.email=arxiv-embed@localhost commit -q -m "image snapshot"
fi

if [[ "${DVC_PULL:-1}" == "1" ]]; then
  dvc pull --remote "$remote" --allow-missing
fi

dvc exp run "$@" "${targets[@]}"
dvc metrics show

if [[ "${DVC_PUSH:-0}" == "1" ]]; then
  dvc push --remote "$remote"
fi
