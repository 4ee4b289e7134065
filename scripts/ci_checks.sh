#!/usr/bin/env bash
# Spec checks of the repository, run by .ci/run and the `checks` CI job (from the repo root, uv env synced):
# GitHub workflow and Cloud Build schemas (offline, schemas ship with check-jsonschema), hadolint on the
# Dockerfiles, shellcheck-free bash syntax of the shell scripts, and the docs site with `mkdocs build --strict`.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

step "GitHub workflows (vendor.github-workflows)"
uv run --frozen check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

step "Cloud Build (vendor.cloudbuild)"
uv run --frozen check-jsonschema --builtin-schema vendor.cloudbuild cloudbuild.yaml

step "hadolint"
dockerfiles=()
for f in Dockerfile.train Dockerfile.serve; do
  if [[ -f "$f" ]]; then dockerfiles+=("$f"); fi
done
uv run --frozen hadolint "${dockerfiles[@]}"
echo "ok -- ${dockerfiles[*]}"

step "shell scripts (bash -n)"
for f in docker/*.sh scripts/*.sh; do bash -n "$f"; done
echo "ok"

step "docs (mkdocs build --strict)"
uv run --frozen mkdocs build --strict --site-dir "${SITE_DIR:-site}"
