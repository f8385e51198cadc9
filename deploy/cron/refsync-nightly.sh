#!/usr/bin/env bash
# refsync-nightly.sh: the nightly `refsync sync`, for cron or the systemd timer.
#
#   - cd to the install directory ($REFSYNC_HOME, default: two levels above this script)
#   - load the env file ($REFSYNC_ENV_FILE, default $REFSYNC_HOME/.env) when it exists
#   - take a non-blocking lock, so two nightly runs never overlap (held: exit 3, like refsync)
#   - run `refsync sync --log-format json [ARGS...]`, appending stdout and stderr to the log
#     ($REFSYNC_LOG, default $REFSYNC_HOME/logs/refsync.log)
#   - exit with refsync's exit code (0 ok, 1 a table failed, 2 config, 3 locked, 130/143
#     interrupted); on a non-zero exit one line also goes to stderr, which cron mails and
#     systemd puts in the journal
#
# Other settings: REFSYNC_BIN (the refsync command, split on spaces; default
# $REFSYNC_HOME/.venv/bin/refsync if present, else `uv run --frozen refsync`) and
# REFSYNC_LOCK (default $REFSYNC_HOME/logs/refsync-nightly.lock). Extra arguments are passed
# to `refsync sync` (e.g. `-t 年金计划`). SIGTERM/SIGINT are passed on to refsync, which rolls
# back the table in flight.
set -euo pipefail

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REFSYNC_HOME=${REFSYNC_HOME:-$(cd -- "$script_dir/../.." && pwd -P)}
export REFSYNC_HOME
cd -- "$REFSYNC_HOME"

env_file=${REFSYNC_ENV_FILE:-$REFSYNC_HOME/.env}
if [[ -f $env_file ]]; then
    set -a
    # shellcheck source=/dev/null
    . "$env_file"
    set +a
fi

# cron runs jobs with PATH=/usr/bin:/bin; uv usually lives in ~/.local/bin
export PATH="$PATH:/usr/local/bin:${HOME:-/nonexistent}/.local/bin"

log_file=${REFSYNC_LOG:-$REFSYNC_HOME/logs/refsync.log}
lock_file=${REFSYNC_LOCK:-$REFSYNC_HOME/logs/refsync-nightly.lock}
mkdir -p -- "$(dirname -- "$log_file")" "$(dirname -- "$lock_file")"

if [[ -n ${REFSYNC_BIN:-} ]]; then
    read -r -a cmd <<<"$REFSYNC_BIN"
elif [[ -x $REFSYNC_HOME/.venv/bin/refsync ]]; then
    cmd=("$REFSYNC_HOME/.venv/bin/refsync")
else
    cmd=(uv run --frozen refsync)
fi

json_string() { # a JSON string literal for $1
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\n'/\\n}
    printf '"%s"' "$s"
}

log_line() { # level event message [exit_code]: one JSON line, like refsync's own
    local extra=""
    [[ $# -ge 4 ]] && extra=",\"exit_code\":$4"
    printf '{"ts":"%s","level":"%s","event":"%s","msg":%s,"logger":"refsync-nightly","pid":%d%s}\n' \
        "$(date +%Y-%m-%dT%H:%M:%S.%3N%:z)" "$1" "$2" "$(json_string "$3")" "$$" "$extra" \
        >>"$log_file"
}

exec 9>>"$lock_file"
if ! flock -n 9; then
    msg="another nightly run holds $lock_file; not starting"
    log_line WARNING nightly.locked "$msg" 3
    printf 'refsync-nightly: %s (exit 3)\n' "$msg" >&2
    exit 3
fi

args=("${cmd[@]}" sync --log-format json "$@")
log_line INFO nightly.start "starting: ${args[*]}"

# Run refsync in the background and wait, so SIGTERM/SIGINT sent to this script reach it.
# The lock (fd 9) is inherited: it stays held until refsync itself has exited.
"${args[@]}" >>"$log_file" 2>&1 &
child=$!
got_signal=""
trap 'got_signal=TERM; kill -TERM "$child" 2>/dev/null || true' TERM
trap 'got_signal=INT; kill -INT "$child" 2>/dev/null || true' INT
while :; do
    got_signal=""
    rc=0
    wait "$child" || rc=$?
    # `wait` also returns when a trapped signal arrives: wait again for the real exit status
    [[ -z $got_signal ]] && break
done
trap - TERM INT

if [[ $rc -eq 0 ]]; then
    log_line INFO nightly.finish "refsync sync exited 0" "$rc"
else
    log_line ERROR nightly.finish "refsync sync exited $rc; see the lines above" "$rc"
    printf 'refsync-nightly: refsync sync exited %d; see %s\n' "$rc" "$log_file" >&2
fi
exit "$rc"
