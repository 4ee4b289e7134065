#!/usr/bin/env bash
# Build the images without a Docker engine and smoke-test the serving image (run as root; .ci/run calls it after
# the tests). Where buildah, podman, runc and mmdebstrap cannot be installed it prints one "skipped" line and exits 0;
# any failure after that exits 1.
#
#   1. tools: apt-get install buildah podman runc mmdebstrap when missing;
#   2. base images: the Dockerfiles' FROM and COPY --from images are pulled; where no registry answers, they are
#      stood in under the same tags: a Debian bookworm root filesystem from mmdebstrap with python3 as the python
#      image, and the uv binaries of PyPI's `uv` wheel as the uv image;
#   3. Dockerfile.serve is built from the committed tree (`git archive HEAD`) with buildah
#      (--isolation chroot --format docker, its .dockerignore), the host's CA bundle passed as the `ca` build secret
#      (for proxies that re-sign TLS; it is never part of the image), and the models baked in: models/onnx,
#      models/faiss and models/classifier when a pipeline run left them, tiny ones from scripts/image_models.py
#      otherwise;
#   4. the image runs with podman (runc, --read-only, no capabilities, as the image's uid 10001): /health,
#      /info, /embed, /search and /classify are checked (scripts/image_smoke_check.py), then SIGTERM must end it
#      with exit 0. Prints the image size, build time and time to the first healthy answer;
#   5. Dockerfile.train is built when the disk has room (IMAGE_SMOKE_TRAIN=auto), torch and the pipeline imported
#      in it, and the image removed again.
#
# Environment (all optional):
#   IMAGE_SMOKE_TRAIN=auto|1|0   build Dockerfile.train: when >= IMAGE_SMOKE_TRAIN_MIN_GB free (default 25), always,
#                                never
#   IMAGE_SMOKE_SOURCE=head|worktree   the build context: the commit HEAD (default) or the working tree's tracked and
#                                untracked, not ignored files
#   IMAGE_SMOKE_MODELS=DIR       onnx/, faiss/ and classifier/ to bake in instead of models/ or the tiny ones
#   IMAGE_SMOKE_CA=FILE          CA bundle for the build (default $SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt)
#   IMAGE_SMOKE_KEEP=1           keep the built images (localhost/arxiv-embed-{serve,train}:smoke)
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)

SERVE_TAG=localhost/arxiv-embed-serve:smoke
TRAIN_TAG=localhost/arxiv-embed-train:smoke
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
# Cloud Run and most CI runners allow these; podman's defaults (the host's limits) can exceed what runc may set.
RUN_OPTS=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=32768:32768)
BUILD_OPTS=(--isolation chroot --format docker --layers --pull=never)

step() { printf '\n== images: %s\n' "$*"; }
skip() {
  printf '\n== images: skipped: %s\n' "$*"
  exit 0
}
fail() {
  printf 'image smoke test FAILED: %s\n' "$*" >&2
  exit 1
}
seconds_since() { echo $(($(date +%s) - $1)); }

# --- 1. tools ------------------------------------------------------------------------------------------------
tools=(buildah podman runc mmdebstrap curl)
missing=()
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  step "installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then skip "${missing[*]} not installed and not root (apt-get install ${tools[*]})"; fi
  if ! command -v apt-get >/dev/null 2>&1; then skip "${missing[*]} not installed and no apt-get"; fi
  export DEBIAN_FRONTEND=noninteractive
  apt_opts=(-q -o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
  if ! { timeout 600 apt-get "${apt_opts[@]}" update && timeout 900 apt-get "${apt_opts[@]}" install -y "${tools[@]}"; } \
    >/tmp/image_smoke_apt.log 2>&1; then
    tail -n 5 /tmp/image_smoke_apt.log
    skip "apt-get install ${tools[*]} failed (log: /tmp/image_smoke_apt.log)"
  fi
fi
if [[ $(id -u) -ne 0 ]]; then skip "needs root (rootful buildah and podman, mmdebstrap in root mode)"; fi
echo "$(buildah --version); $(podman --version); $(runc --version | head -n 1); mmdebstrap $(mmdebstrap --version | awk '{print $2}')"

work=$(mktemp -d /tmp/image_smoke.XXXXXX)
container=arxiv-embed-smoke-$$
cleanup() {
  podman rm --force --time 0 "$container" >/dev/null 2>&1 || true
  if [[ "${IMAGE_SMOKE_KEEP:-0}" != 1 ]]; then
    podman rmi --force "$SERVE_TAG" "$TRAIN_TAG" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- 2. base images --------------------------------------------------------------------------------------------
from_image=$(awk '$1 == "FROM" {print $2; exit}' Dockerfile.serve)
uv_image=$(grep -o -m 1 'COPY --from=[^ ]*' Dockerfile.serve | cut -d= -f2)
for dockerfile in Dockerfile.train; do
  [[ $(awk '$1 == "FROM" {print $2; exit}' "$dockerfile") == "$from_image" ]] || fail "$dockerfile: FROM differs"
  [[ $(grep -o -m 1 'COPY --from=[^ ]*' "$dockerfile" | cut -d= -f2) == "$uv_image" ]] || fail "$dockerfile: uv differs"
done
qualified() { # python:3.11-slim-bookworm -> docker.io/library/python:3.11-slim-bookworm
  case "$1" in
    */*.*/* | *.*/*) echo "$1" ;;
    */*) echo "docker.io/$1" ;;
    *) echo "docker.io/library/$1" ;;
  esac
}

python_stand_in() { # a Debian bookworm root filesystem with python3, tagged as the python image
  local tag=$1 version
  version=$(sed -n 's/^python:\(3\.[0-9]*\)-slim-bookworm$/\1/p' <<<"$from_image")
  [[ "$version" == 3.11 ]] || fail "no stand-in for $from_image: Debian bookworm's python3 is 3.11"
  mmdebstrap --quiet --variant=apt --include=ca-certificates,passwd,python3 \
    --aptopt='Acquire::Retries "3"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='ln -s /usr/bin/python3 "$1/usr/local/bin/python3"' \
    --customize-hook='ln -s /usr/bin/python3 "$1/usr/local/bin/python"' \
    bookworm "$work/bookworm.tar" \
    "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb $DEBIAN_SECURITY bookworm-security main"
  podman import --quiet --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' "$work/bookworm.tar" "$tag" >/dev/null
  rm -f "$work/bookworm.tar"
}

uv_stand_in() { # /uv and /uvx from PyPI's uv wheel of the image's version, tagged as the uv image
  local tag=$1 version=${uv_image##*:} arch pip c
  arch=$(uname -m)
  if python3 -m pip --version >/dev/null 2>&1; then pip=(python3 -m pip); else pip=(uvx --from pip pip); fi
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform "manylinux_2_17_$arch" --dest "$work/uv-wheel" "uv==$version"
  python3 - "$work/uv-wheel" "$work/uv-bin" <<'EOF'
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("uv-*.whl"))
out = Path(sys.argv[2])
out.mkdir()
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.endswith(("/scripts/uv", "/scripts/uvx")):
            (out / Path(name).name).write_bytes(archive.read(name))
EOF
  c=$(buildah from scratch)
  buildah copy --quiet --chmod 0755 "$c" "$work/uv-bin/uv" "$work/uv-bin/uvx" / >/dev/null
  buildah config --entrypoint '["/uv"]' "$c"
  buildah commit --quiet --format docker --rm "$c" "$tag" >/dev/null
}

step "base images $from_image, $uv_image"
for image in "$from_image" "$uv_image"; do
  tag=$(qualified "$image")
  if podman image exists "$tag"; then
    echo "$tag: present"
  elif timeout 300 podman pull --quiet "$tag" >/dev/null 2>"$work/pull.log"; then
    echo "$tag: pulled"
  else
    start=$(date +%s)
    echo "$tag: podman pull failed (...$(tail -n 1 "$work/pull.log" | tail -c 90)); building a stand-in"
    if [[ "$image" == "$uv_image" ]]; then uv_stand_in "$tag"; else python_stand_in "$tag"; fi
    echo "$tag: stand-in built in $(seconds_since "$start") s"
  fi
done
podman run --rm "${RUN_OPTS[@]}" "$(qualified "$from_image")" python --version >/dev/null 2>&1 ||
  skip "podman cannot run a container here (podman run ${RUN_OPTS[*]} $from_image failed)"

# --- 3. the build context: the committed tree (or the working tree) and the models ---------------------------
context=$work/context
mkdir -p "$context"
git rev-parse --verify --quiet HEAD >/dev/null || fail "$PWD is not a git checkout with a commit (the build context)"
if [[ "${IMAGE_SMOKE_SOURCE:-head}" == worktree ]]; then
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$context"
  source_line="working tree of $(git rev-parse --short HEAD)"
else
  git archive --format=tar HEAD | tar -x -C "$context"
  source_line="commit $(git rev-parse --short HEAD)"
fi
models=${IMAGE_SMOKE_MODELS:-models}
fixtures=()
if [[ -f $models/onnx/config.json && -f $models/faiss/index.faiss && -f $models/classifier/classes.json ]]; then
  mkdir -p "$context/models"
  for part in onnx faiss classifier; do cp -rL "$models/$part" "$context/models/$part"; done
  models_line="$models/{onnx,faiss,classifier}"
else
  start=$(date +%s)
  uv run --frozen python scripts/image_models.py "$context/models" >"$work/models.log" 2>&1 ||
    { cat "$work/models.log"; fail "scripts/image_models.py"; }
  models_line="tiny ones from scripts/image_models.py ($(seconds_since "$start") s)"
  fixtures=(--fixtures)
fi
ca=${IMAGE_SMOKE_CA:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
secret=()
if [[ -f "$ca" ]]; then secret=(--secret "id=ca,src=$ca"); fi

build() { # Dockerfile tag -> seconds on stdout
  local dockerfile=$1 tag=$2 start
  start=$(date +%s)
  if ! timeout 900 buildah bud "${BUILD_OPTS[@]}" "${secret[@]}" --file "$dockerfile" \
    --ignorefile "$context/$dockerfile.dockerignore" --tag "$tag" "$context" >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log" >&2
    fail "buildah bud --file $dockerfile"
  fi
  seconds_since "$start"
}
size() { podman image inspect --format '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1 / 1e9}'; }

step "Dockerfile.serve from the $source_line; models: $models_line; CA: ${ca}"
serve_seconds=$(build Dockerfile.serve "$SERVE_TAG")
grep -E '^(STEP|Installed|Prepared)' "$work/build.log" | cut -c1-150
echo "serve image: $(size "$SERVE_TAG"), built in $serve_seconds s"

# --- 4. run it read-only as the image's user, check the API, then SIGTERM ---------------------------------------
step "podman run --read-only (runc, no capabilities)"
user=$(podman image inspect --format '{{.Config.User}}' "$SERVE_TAG")
[[ "$user" == 10001:10001 ]] || fail "the image's user is '$user', not 10001:10001"
base_ca=$(podman run --rm "${RUN_OPTS[@]}" "$(qualified "$from_image")" sha256sum /etc/ssl/certs/ca-certificates.crt)
image_ca=$(podman run --rm "${RUN_OPTS[@]}" --no-healthcheck --entrypoint sha256sum "$SERVE_TAG" \
  /etc/ssl/certs/ca-certificates.crt)
[[ "$image_ca" == "$base_ca" ]] || fail "the image's CA bundle is not the base image's: the build secret leaked"
podman run --rm "${RUN_OPTS[@]}" --no-healthcheck --entrypoint sh "$SERVE_TAG" -c '! ls /run/secrets/ca 2>/dev/null' ||
  fail "the build secret is left in the image"

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')
url=http://127.0.0.1:$port
# Host network and $PORT as Cloud Run sets it; loopback only. --no-healthcheck: podman would schedule the
# HEALTHCHECK with systemd timers (absent in CI containers); its command is run once by hand below.
podman run --detach --name "$container" "${RUN_OPTS[@]}" --read-only --cap-drop ALL \
  --security-opt no-new-privileges --network host --no-healthcheck \
  -e PORT="$port" -e ARXIV_EMBED_HOST=127.0.0.1 -e ARXIV_EMBED_API_KEY="$key" "$SERVE_TAG" >/dev/null
start=$(date +%s%N)
until curl -fsS -o /dev/null "$url/health" 2>/dev/null; do
  if [[ $(podman inspect --format '{{.State.Running}}' "$container") != true ]]; then
    podman logs "$container" 2>&1 | tail -n 40
    fail "the container exited before /health answered"
  fi
  if (($(date +%s%N) - start > 120000000000)); then
    podman logs "$container" 2>&1 | tail -n 40
    fail "/health did not answer 200 within 120 s"
  fi
  sleep 0.2
done
ready_ms=$((($(date +%s%N) - start) / 1000000))
echo "/health 200 after $((ready_ms / 1000)).$(printf '%03d' $((ready_ms % 1000))) s"
uid=$(podman exec "$container" sh -c 'id -u'):$(podman exec "$container" sh -c 'id -g')
[[ "$uid" == 10001:10001 ]] || fail "the server runs as $uid"
podman exec "$container" sh -c 'touch /app/x' 2>/dev/null && fail "the root filesystem is writable"
echo "runs as uid:gid $uid on a read-only root filesystem"
mapfile -t probe < <(podman image inspect --format '{{json .HealthCheck.Test}}' "$SERVE_TAG" |
  python3 -c 'import json, sys; test = json.load(sys.stdin); assert test[0] == "CMD", test; print(*test[1:], sep="\n")')
((${#probe[@]})) || fail "the image has no HEALTHCHECK"
podman exec "$container" "${probe[@]}" || fail "HEALTHCHECK ${probe[*]}: exit $?"
echo "HEALTHCHECK ${probe[*]}: exit 0"
python3 scripts/image_smoke_check.py "$url" --key "$key" "${fixtures[@]}" || {
  podman logs "$container" 2>&1 | tail -n 40
  fail "API checks"
}

podman kill --signal TERM "$container" >/dev/null
code=$(timeout 120 podman wait "$container") || fail "the server did not stop within 120 s of SIGTERM"
podman logs "$container" >"$work/serve.log" 2>&1
if [[ "$code" != 0 ]]; then
  tail -n 40 "$work/serve.log"
  fail "SIGTERM: exit $code, not 0"
fi
grep -q "Application shutdown complete" "$work/serve.log" || fail "no 'Application shutdown complete' in the log"
if grep -q "Traceback" "$work/serve.log"; then
  cat "$work/serve.log"
  fail "a traceback in the server's log"
fi
echo "SIGTERM: exit 0, 'Application shutdown complete'"
echo "serve image OK: $(size "$SERVE_TAG"), build $serve_seconds s, /health after $ready_ms ms ($source_line)"

# --- 5. the training image, where the disk allows ----------------------------------------------------------
storage=$(podman info --format '{{.Store.GraphRoot}}')
free_gb=$(df --output=avail -B1G "$storage" | tail -n 1 | tr -d ' ')
min_gb=${IMAGE_SMOKE_TRAIN_MIN_GB:-25}
case "${IMAGE_SMOKE_TRAIN:-auto}" in
  0) step "Dockerfile.train: not built (IMAGE_SMOKE_TRAIN=0)" ;;
  auto | 1)
    if [[ "${IMAGE_SMOKE_TRAIN:-auto}" == auto ]] && ((free_gb < min_gb)); then
      step "Dockerfile.train: not built, $free_gb GB free under $storage (< $min_gb GB; it needs about 22)"
    else
      step "Dockerfile.train from the $source_line ($free_gb GB free)"
      train_seconds=$(build Dockerfile.train "$TRAIN_TAG")
      grep -E '^(STEP|Installed|Prepared)' "$work/build.log" | cut -c1-150
      podman run --rm "${RUN_OPTS[@]}" --read-only "$TRAIN_TAG" python -c \
        'import torch, sentence_transformers, dvc, arxiv_embed; print("torch", torch.__version__, "cuda", torch.version.cuda)' ||
        fail "the train image cannot import its pipeline"
      podman run --rm "${RUN_OPTS[@]}" "$TRAIN_TAG" dvc --version >/dev/null || fail "dvc in the train image"
      echo "train image OK: $(size "$TRAIN_TAG"), build $train_seconds s"
    fi
    ;;
  *) fail "IMAGE_SMOKE_TRAIN=${IMAGE_SMOKE_TRAIN}: auto, 1 or 0" ;;
esac
echo "images: $(seconds_since "$started") s in all"
