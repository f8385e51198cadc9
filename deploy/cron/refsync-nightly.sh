#!/usr/bin/env bash
# refsync-nightly.sh: the nightly `refsync sync`, for cron or the systemd timer.
#
#   - cd to the install directory ($REFSYNC_HOME, default: two levels above this script)
#   - check what must hold before refsync can start: the log is writable, the env file
#     ($REFSYNC_ENV_FILE, default $REFSYNC_HOME/.env) is readable, refsync runs (`--version`).
#     Any of these failing: one JSON line (in the log when it is writable, always on stderr)
#     and exit 4, a code refsync itself never uses
#   - take a non-blocking lock, so two nightly runs never overlap (held: exit 3, like refsync)
#   - run `refsync sync --log-format json --env-file ENV --metrics-file PROM [ARGS...]`,
#     appending stdout and stderr to the log ($REFSYNC_LOG, default
#     $REFSYNC_HOME/logs/refsync.log). The env file is read by refsync (dotenv rules), never
#     by this shell: a password containing `$` or spaces works as written
#   - exit with refsync's exit code (0 ok, 1 a table failed, 2 config, 3 locked, 130/143
#     interrupted); on a non-zero exit, stderr (which cron mails to MAILTO and systemd puts in
#     the journal) names each failed table and its error class, one line each
#
# Other settings (from the environment: cron.d, the systemd unit): REFSYNC_BIN (the refsync
# command, split on spaces; default $REFSYNC_HOME/.venv/bin/refsync if present, else
# `uv run --frozen refsync`), REFSYNC_LOCK (default $REFSYNC_HOME/logs/refsync-nightly.lock),
# REFSYNC_METRICS_FILE (Prometheus textfile; default $REFSYNC_HOME/state/refsync.prom, empty:
# none). Extra arguments are passed to `refsync sync` (e.g. `-t 年金计划`). SIGTERM/SIGINT are
# passed on to refsync, which rolls back the table in flight.
set -euo pipefail

PRESTART_EXIT=4

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REFSYNC_HOME=${REFSYNC_HOME:-$(cd -- "$script_dir/../.." && pwd -P)}
export REFSYNC_HOME

log_file=${REFSYNC_LOG:-$REFSYNC_HOME/logs/refsync.log}
lock_file=${REFSYNC_LOCK:-$REFSYNC_HOME/logs/refsync-nightly.lock}
env_file=${REFSYNC_ENV_FILE:-$REFSYNC_HOME/.env}
metrics_file=${REFSYNC_METRICS_FILE-$REFSYNC_HOME/state/refsync.prom}
log_ok=""

json_string() { # a JSON string literal for $1
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    s=${s//$'\n'/\\n}
    printf '"%s"' "$s"
}

json_line() { # level event message [exit_code]: one JSON line, like refsync's own
    local extra=""
    [[ $# -ge 4 ]] && extra=",\"exit_code\":$4"
    printf '{"ts":"%s","level":"%s","event":"%s","msg":%s,"logger":"refsync-nightly","pid":%d%s}\n' \
        "$(date +%Y-%m-%dT%H:%M:%S.%3N%:z)" "$1" "$2" "$(json_string "$3")" "$$" "$extra"
}

log_line() { # to the log (when it can be written)
    if [[ -n $log_ok ]]; then json_line "$@" >>"$log_file"; fi
}

prestart_failure() { # message: refsync never started; say so everywhere, exit 4
    local line
    line=$(json_line ERROR nightly.prestart_failed "$1" "$PRESTART_EXIT")
    if [[ -n $log_ok ]]; then printf '%s\n' "$line" >>"$log_file"; fi
    printf '%s\n' "$line" >&2
    exit "$PRESTART_EXIT"
}

cd -- "$REFSYNC_HOME" 2>/dev/null || prestart_failure "cannot cd to REFSYNC_HOME=$REFSYNC_HOME"

# cron runs jobs with PATH=/usr/bin:/bin; uv usually lives in ~/.local/bin
export PATH="$PATH:/usr/local/bin:${HOME:-/nonexistent}/.local/bin"

if mkdir -p -- "$(dirname -- "$log_file")" 2>/dev/null && { : >>"$log_file"; } 2>/dev/null; then
    log_ok=1
else
    prestart_failure "cannot write the log $log_file as $(id -un): create its directory with
install -d -o $(id -un) $(dirname -- "$log_file")"
fi
mkdir -p -- "$(dirname -- "$lock_file")" 2>/dev/null
if [[ -n $metrics_file ]]; then mkdir -p -- "$(dirname -- "$metrics_file")" 2>/dev/null; fi

env_args=()
# the default .env may be absent (settings from the environment); a named one must be there
if [[ -e $env_file || -n ${REFSYNC_ENV_FILE:-} ]]; then
    [[ -r $env_file ]] || prestart_failure "cannot read the env file $env_file as $(id -un):
chown root:$(id -gn) $env_file && chmod 0640 $env_file"
    env_args=(--env-file "$env_file")
fi

if [[ -n ${REFSYNC_BIN:-} ]]; then
    read -r -a cmd <<<"$REFSYNC_BIN"
elif [[ -x $REFSYNC_HOME/.venv/bin/refsync ]]; then
    cmd=("$REFSYNC_HOME/.venv/bin/refsync")
else
    cmd=(uv run --frozen refsync)
fi

# refsync must be able to start at all (an interpreter this user can execute, an intact venv)
if ! version=$("${cmd[@]}" --version 2>&1); then
    prestart_failure "cannot start refsync (${cmd[*]} --version): ${version:0:300}"
fi

exec 9>>"$lock_file" || prestart_failure "cannot open the lock file $lock_file"
if ! flock -n 9; then
    msg="another nightly run holds $lock_file; not starting"
    log_line WARNING nightly.locked "$msg" 3
    printf 'refsync-nightly: %s (exit 3)\n' "$msg" >&2
    exit 3
fi

metrics_args=()
if [[ -n $metrics_file ]]; then metrics_args=(--metrics-file "$metrics_file"); fi
args=("${cmd[@]}" sync --log-format json "${env_args[@]}" "${metrics_args[@]}" "$@")
log_line INFO nightly.start "starting ($version): ${args[*]}"
log_start=$(stat -c %s -- "$log_file")

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

failures() { # this run's failed tables and run-level errors, one line each, from the JSON log
    tail -c "+$((log_start + 1))" -- "$log_file" | sed -n \
        -e 's/.*"event":"table_done".*"table":"\([^"]*\)".*"status":"\(failed\|skipped\|guarded\|interrupted\)".*"error_class":"\([^"]*\)".*/  \1: \2 [\3]/p' \
        -e 's/.*"event":"error","msg":"\([^"]\{0,200\}\).*"error_class":"\([^"]*\)".*/  run: [\2] \1/p'
}

if [[ $rc -eq 0 ]]; then
    log_line INFO nightly.finish "refsync sync exited 0" "$rc"
else
    log_line ERROR nightly.finish "refsync sync exited $rc; see the lines above" "$rc"
    printf 'refsync-nightly: refsync sync exited %d; details in %s\n' "$rc" "$log_file" >&2
    failures >&2
fi
exit "$rc"
