#!/usr/bin/env bash
# Launches a tiny_recursive training run on a Cloud TPU VM slice (see docs/tpu.md).
#
# Creates the slice (or reuses it when it already exists), copies this repository's code
# to every worker, installs it with jax[tpu], and starts the same training command on all
# workers. Run `launch_tpu.sh --help` for the settings.
set -euo pipefail

readonly LIBTPU_FIND_LINKS='https://storage.googleapis.com/jax-releases/libtpu_releases.html'
# Remote paths: $HOME is expanded by the worker's shell, not here.
readonly REMOTE_CODE_DIR="\$HOME/tiny_recursive"
readonly REMOTE_TARBALL_NAME='tiny_recursive_code.tar.gz'  # scp puts it in the home directory.
readonly REMOTE_LOG_DIR="\$HOME/tiny_recursive_logs"

usage() {
  cat <<'EOF'
Usage: launch_tpu.sh [OPTIONS] [-- --config.KEY=VALUE ...]

Creates (or reuses) a Cloud TPU VM slice, copies the code to every worker, installs it,
and starts `python -m experiments.main --config=CONFIG --workdir=WORKDIR` on all workers.
Rerunning the same command after a preemption resumes from the last checkpoint in WORKDIR.

Options (flag, or the environment variable in brackets):
  --project=ID            Google Cloud project                      [TPU_PROJECT] required
  --zone=ZONE             zone of the TPU, e.g. us-central2-b       [TPU_ZONE] required
  --name=NAME             TPU VM name                               [TPU_NAME] default trm-TYPE
  --accelerator-type=T    slice type, e.g. v4-8, v4-32, v5litepod-8 [TPU_TYPE] default v4-8
  --version=V             TPU VM runtime; default by type: tpu-ubuntu2204-base (v4),
                          v2-alpha-tpuv5-lite (v5litepod), v2-alpha-tpuv5 (v5p),
                          v2-alpha-tpuv6e (v6e)                     [TPU_RUNTIME]
  --config=PATH[:ARG]     experiment config file or name, e.g. sudoku_extreme:att or
                          experiments/configs/sudoku_extreme.py:mlp [TRM_CONFIG] required
  --workdir=gs://B/P      run directory (checkpoints, metrics); must be on GCS
                                                                    [TRM_WORKDIR] required
  --data-dir=DIR          TFDS data directory, passed as --config.data.data_dir; use a
                          gs:// path so that every worker sees it   [TRM_DATA_DIR]
  --git-ref=REF           commit to ship with `git archive` (default HEAD: uncommitted
                          changes are not shipped)                  [TRM_GIT_REF]
  --git-url=URL           clone URL at REF on every worker instead of copying an archive
                                                                    [TRM_GIT_URL]
  --python=BIN            Python interpreter on the workers         [TRM_PYTHON] default python3
  --preemptible           create a preemptible slice
  --spot                  create a Spot slice
  --skip-setup            do not copy or install the code, only start the run
  --dry-run               print every command, one per line, shell-quoted, and run nothing
  -h, --help              show this help and exit

Arguments after `--` are passed to experiments.main unchanged, e.g.
  launch_tpu.sh --project=my-proj --zone=us-central2-b --accelerator-type=v4-32 \
    --config=experiments/configs/maze_hard.py --workdir=gs://my-bucket/runs/maze \
    -- --config.train.global_batch_size=768

No extra flags are needed for multi-host runs: on a TPU slice the entry point's
jax.distributed.initialize() finds the coordinator and the process count by itself.
EOF
}

die() {
  echo "launch_tpu.sh: error: $*" >&2
  echo "Run 'launch_tpu.sh --help' for usage." >&2
  exit 2
}

# Quotes one word for a POSIX shell: as-is when it is safe, else in single quotes.
quote() {
  local word="$1"
  if [[ -n "${word}" && "${word}" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "${word}"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# Joins the arguments into one shell-quoted command line.
quote_command() {
  local out='' word
  for word in "$@"; do
    out+="${out:+ }$(quote "${word}")"
  done
  printf '%s' "${out}"
}

# Prints the command (to stdout in dry-run mode, else to stderr) and runs it unless dry.
run() {
  if [[ "${DRY_RUN}" == true ]]; then
    quote_command "$@"
    echo
  else
    echo "+ $(quote_command "$@")" >&2
    "$@"
  fi
}

# In dry-run mode prints a comment line that explains the next command(s).
note() {
  if [[ "${DRY_RUN}" == true ]]; then
    echo "# $*"
  else
    echo "launch_tpu.sh: $*" >&2
  fi
}

default_runtime() {
  case "$1" in
    v4-*) echo 'tpu-ubuntu2204-base' ;;
    v5litepod-*|v5e-*) echo 'v2-alpha-tpuv5-lite' ;;
    v5p-*) echo 'v2-alpha-tpuv5' ;;
    v6e-*) echo 'v2-alpha-tpuv6e' ;;
    *) echo '' ;;
  esac
}

PROJECT="${TPU_PROJECT:-}"
ZONE="${TPU_ZONE:-}"
NAME="${TPU_NAME:-}"
ACCELERATOR_TYPE="${TPU_TYPE:-v4-8}"
RUNTIME="${TPU_RUNTIME:-}"
CONFIG="${TRM_CONFIG:-}"
WORKDIR="${TRM_WORKDIR:-}"
DATA_DIR="${TRM_DATA_DIR:-}"
GIT_REF="${TRM_GIT_REF:-HEAD}"
GIT_URL="${TRM_GIT_URL:-}"
PYTHON="${TRM_PYTHON:-python3}"
PREEMPTIBLE=false
SPOT=false
SKIP_SETUP=false
DRY_RUN=false
EXTRA_ARGS=()

# Accepts both `--flag=value` and `--flag value`.
while (($# > 0)); do
  arg="$1"
  shift
  case "${arg}" in
    --) EXTRA_ARGS=("$@"); break ;;
    -h|--help) usage; exit 0 ;;
    --preemptible) PREEMPTIBLE=true; continue ;;
    --spot) SPOT=true; continue ;;
    --skip-setup) SKIP_SETUP=true; continue ;;
    --dry-run) DRY_RUN=true; continue ;;
    --*=*) key="${arg%%=*}"; value="${arg#*=}" ;;
    --*)
      key="${arg}"
      (($# > 0)) || die "${key} needs a value."
      value="$1"
      shift
      ;;
    *) die "unexpected argument '${arg}' (put experiment flags after '--')." ;;
  esac
  case "${key}" in
    --project) PROJECT="${value}" ;;
    --zone) ZONE="${value}" ;;
    --name) NAME="${value}" ;;
    --accelerator-type) ACCELERATOR_TYPE="${value}" ;;
    --version) RUNTIME="${value}" ;;
    --config) CONFIG="${value}" ;;
    --workdir) WORKDIR="${value}" ;;
    --data-dir) DATA_DIR="${value}" ;;
    --git-ref) GIT_REF="${value}" ;;
    --git-url) GIT_URL="${value}" ;;
    --python) PYTHON="${value}" ;;
    *) die "unknown option '${key}'." ;;
  esac
done

[[ -n "${PROJECT}" ]] || die 'missing project: pass --project=ID or set TPU_PROJECT.'
[[ -n "${ZONE}" ]] || die 'missing zone: pass --zone=ZONE or set TPU_ZONE.'
[[ -n "${ACCELERATOR_TYPE}" ]] || die 'empty accelerator type: pass --accelerator-type=TYPE.'
[[ -n "${CONFIG}" ]] || die 'missing config: pass --config=PATH[:ARG] or set TRM_CONFIG.'
[[ -n "${WORKDIR}" ]] || die 'missing workdir: pass --workdir=gs://BUCKET/PATH or set TRM_WORKDIR.'
[[ "${WORKDIR}" =~ ^gs://[^/]+/.+ ]] || die "workdir must be gs://BUCKET/PATH (every worker \
writes checkpoints there and a preempted run resumes from it), got '${WORKDIR}'."
if [[ "${PREEMPTIBLE}" == true && "${SPOT}" == true ]]; then
  die 'choose one of --preemptible and --spot.'
fi
NAME="${NAME:-trm-${ACCELERATOR_TYPE}}"
[[ "${NAME}" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] || die "TPU name '${NAME}' must be lower-case \
letters, digits and hyphens, starting with a letter."
RUNTIME="${RUNTIME:-$(default_runtime "${ACCELERATOR_TYPE}")}"
[[ -n "${RUNTIME}" ]] || die "no default runtime for accelerator type '${ACCELERATOR_TYPE}': \
pass --version=RUNTIME or set TPU_RUNTIME."
# A config is a file path or a short name of experiments/configs/ (see
# experiments/config_loading.py), either with an optional :ARG; it is passed on unchanged.
config_file="${CONFIG%%:*}"
if [[ "${config_file}" != *.py && "${config_file}" != */* ]]; then
  config_file="experiments/configs/${config_file}.py"
fi
[[ "${config_file}" == *.py ]] || die "config must be a .py file or a config name (optionally \
:ARG), got '${CONFIG}'."
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${GIT_URL}" && ! -f "${REPO_ROOT}/${config_file}" ]]; then
  die "config file '${config_file}' not found under ${REPO_ROOT}."
fi

TPU=(gcloud compute tpus tpu-vm)
WHERE=("--zone=${ZONE}" "--project=${PROJECT}")

# --- 1. The slice: reuse it when it exists and is READY, recreate it when preempted. ---
create_command=("${TPU[@]}" create "${NAME}" "${WHERE[@]}"
  "--accelerator-type=${ACCELERATOR_TYPE}" "--version=${RUNTIME}")
if [[ "${PREEMPTIBLE}" == true ]]; then create_command+=(--preemptible); fi
if [[ "${SPOT}" == true ]]; then create_command+=(--spot); fi
describe_command=("${TPU[@]}" describe "${NAME}" "${WHERE[@]}" '--format=value(state)')
delete_command=("${TPU[@]}" delete "${NAME}" "${WHERE[@]}" --quiet)

if [[ "${DRY_RUN}" == true ]]; then
  note "Reuse ${NAME} if this prints READY; delete it first if it prints PREEMPTED or" \
    "TERMINATED; create it if describe fails (no such TPU):"
  run "${describe_command[@]}"
  note "only if the state is PREEMPTED or TERMINATED:"
  run "${delete_command[@]}"
  note "only if the TPU does not exist (or was just deleted):"
  run "${create_command[@]}"
else
  if state="$("${describe_command[@]}" 2>/dev/null)"; then
    case "${state}" in
      READY) note "reusing ${NAME} (READY)." ;;
      PREEMPTED|TERMINATED)
        note "${NAME} is ${state}: deleting and recreating it."
        run "${delete_command[@]}"
        run "${create_command[@]}"
        ;;
      *) die "TPU ${NAME} exists in state '${state}'; wait until it is READY or delete it." ;;
    esac
  else
    note "${NAME} does not exist: creating it."
    run "${create_command[@]}"
  fi
fi

# --- 2. Code and dependencies on every worker. ---
if [[ "${SKIP_SETUP}" != true ]]; then
  if [[ -n "${GIT_URL}" ]]; then
    note "cloning ${GIT_URL} at ${GIT_REF} on every worker."
    fetch="rm -rf ${REMOTE_CODE_DIR} && git clone --quiet $(quote "${GIT_URL}") \
${REMOTE_CODE_DIR} && git -C ${REMOTE_CODE_DIR} checkout --quiet $(quote "${GIT_REF}")"
  else
    tarball="${TMPDIR:-/tmp}/tiny_recursive_${NAME}.tar.gz"
    if [[ "${DRY_RUN}" != true ]] && ! git -C "${REPO_ROOT}" diff --quiet HEAD -- 2>/dev/null; then
      note "warning: uncommitted changes are not shipped; git archive copies ${GIT_REF}."
    fi
    note "packing ${GIT_REF} and copying it to every worker."
    run git -C "${REPO_ROOT}" archive --format=tar.gz -o "${tarball}" "${GIT_REF}"
    run "${TPU[@]}" scp "${tarball}" "${NAME}:${REMOTE_TARBALL_NAME}" --worker=all "${WHERE[@]}"
    fetch="rm -rf ${REMOTE_CODE_DIR} && mkdir -p ${REMOTE_CODE_DIR} && tar -xzf \
\$HOME/${REMOTE_TARBALL_NAME} -C ${REMOTE_CODE_DIR}"
  fi
  install="cd ${REMOTE_CODE_DIR} && $(quote "${PYTHON}") -m pip install --quiet --upgrade pip \
&& $(quote "${PYTHON}") -m pip install --quiet -e . \"jax[tpu]\" -f ${LIBTPU_FIND_LINKS}"
  note "unpacking and installing on every worker."
  run "${TPU[@]}" ssh "${NAME}" --worker=all "${WHERE[@]}" "--command=${fetch} && ${install}"
fi

# --- 3. The run: the same command on every worker, in the background, logged. ---
train_command=("${PYTHON}" -m experiments.main "--config=${CONFIG}" "--workdir=${WORKDIR}")
if [[ -n "${DATA_DIR}" ]]; then train_command+=("--config.data.data_dir=${DATA_DIR}"); fi
train_command+=("${EXTRA_ARGS[@]}")
log="${REMOTE_LOG_DIR}/${NAME}.log"
pid="${REMOTE_LOG_DIR}/${NAME}.pid"
# A second process would fail to open the TPU, so refuse while the last run is alive.
# `;` (not `&&`) keeps the trailing `&` on the nohup command alone, so $! is its pid.
start="mkdir -p ${REMOTE_LOG_DIR}; if [ -f ${pid} ] && kill -0 \"\$(cat ${pid})\" 2>/dev/null; \
then echo \"already running (pid \$(cat ${pid})); stop it with: kill \$(cat ${pid})\" >&2; exit 1; \
fi; cd ${REMOTE_CODE_DIR} || exit 1; nohup $(quote_command "${train_command[@]}") >> ${log} 2>&1 \
< /dev/null & echo \$! > ${pid}"
note "starting the run on every worker; logs in ${log} on each worker."
run "${TPU[@]}" ssh "${NAME}" --worker=all "${WHERE[@]}" "--command=${start}"
if [[ "${DRY_RUN}" != true ]]; then
  note "started. Follow worker 0 with: $(quote_command "${TPU[@]}" ssh "${NAME}" --worker=0 \
"${WHERE[@]}" "--command=tail -f ${log}")"
fi
