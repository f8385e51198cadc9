#!/usr/bin/env bash
# refsync-nightly.sh: the nightly `refsync sync`, for cron or the systemd timer.
#
#   - refuse to run as root (it would leave root-owned log and lock files behind, and the
#     next run as the service user would fail): run it as the service user
#   - check what must hold before refsync can start: the log is writable, the env file is
#     readable, refsync runs (`--version`), the metrics directory exists or can be made.
#     Any of these failing: exit 4, a code refsync itself never uses
#   - take a non-blocking lock, so two nightly runs never overlap (held: exit 3, like refsync)
#   - run `refsync sync --log-format json --env-file ENV --metrics-file PROM [ARGS...]` under
#     `timeout`, an outer bound 10 minutes past refsync's own deadline (max_run_time), with
#     stdout and stderr appended to the log. The env file is read by refsync (dotenv rules),
#     never by this shell: a password containing `$` or spaces works as written
#   - exit with refsync's exit code (0 ok, 1 a table failed, 2 config, 3 locked, 130/143
#     interrupted; 124 the outer bound ended the run)
#
# Every exit writes one JSON line to the log (where it can be written) and, when it is not 0,
# a summary on stderr (cron mails it to MAILTO, systemd puts it in the journal) and a `/fail`
# ping to the dead-man's switch when one is configured. The summary's table lines come from
# `refsync status --problems`. Files the wrapper creates are 0640 (umask 027).
#
# Settings, from the environment (a line in /etc/cron.d/refsync, Environment= in the unit);
# the defaults below are the one place that names the install's paths:
#   REFSYNC_HOME         the code (default: two levels above this script, e.g. /opt/refsync)
#   REFSYNC_ETC          config and secrets (/etc/refsync); the working directory of the run
#   REFSYNC_ENV_FILE     WDH_* settings read by refsync ($REFSYNC_ETC/refsync.env)
#   REFSYNC_LOG          the JSON log (/var/log/refsync/refsync.log)
#   REFSYNC_LOCK         the nightly lock (/var/lib/refsync/refsync-nightly.lock)
#   REFSYNC_METRICS_FILE Prometheus textfile (/var/lib/refsync/metrics/refsync.prom; empty: none)
#   REFSYNC_BIN          the refsync command, split on spaces ($REFSYNC_HOME/.venv/bin/refsync
#                        if present, else `uv run --frozen refsync`)
#   REFSYNC_MAX_RUN_TIME refsync's max_run_time (WDH_REFERENCE_SYNC_MAX_RUN_TIME from the
#                        environment or the env file, else 4h)
#   REFSYNC_OUTER_MARGIN how much longer than that the outer bound is (10m)
#   REFSYNC_TIMEZONE     the zone of the log's timestamps, as refsync's `timezone` (Asia/Shanghai)
#   REFSYNC_PING_URL     the dead-man's switch (WDH_REFERENCE_SYNC_PING_URL from the
#                        environment or the env file)
#   REFSYNC_ALLOW_ROOT   `yes` lets it run as root (a container whose only user is root)
# Extra arguments are passed to `refsync sync` (e.g. `-t 年金计划`). SIGTERM/SIGINT are
# passed on to refsync, which rolls back the table in flight.
set -uo pipefail
umask 027

PRESTART_EXIT=4
TIMED_OUT_EXIT=124
KILL_AFTER_S=60

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
REFSYNC_HOME=${REFSYNC_HOME:-$(cd -- "$script_dir/../.." && pwd -P)}
REFSYNC_ETC=${REFSYNC_ETC:-/etc/refsync}
export REFSYNC_HOME REFSYNC_ETC
env_file=${REFSYNC_ENV_FILE:-$REFSYNC_ETC/refsync.env}
log_file=${REFSYNC_LOG:-/var/log/refsync/refsync.log}
lock_file=${REFSYNC_LOCK:-/var/lib/refsync/refsync-nightly.lock}
metrics_file=${REFSYNC_METRICS_FILE-/var/lib/refsync/metrics/refsync.prom}
zone=${REFSYNC_TIMEZONE:-Asia/Shanghai}
log_ok=""
version=""

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
    [[ -n $version ]] && extra+=",\"version\":$(json_string "$version")"
    printf '{"ts":"%s","level":"%s","event":"%s","msg":%s,"logger":"refsync-nightly","pid":%d%s}\n' \
        "$(TZ=$zone date +%Y-%m-%dT%H:%M:%S.%3N%:z)" "$1" "$2" "$(json_string "$3")" "$$" "$extra"
}

log_line() { # to the log (when it can be written)
    if [[ -n $log_ok ]]; then json_line "$@" >>"$log_file"; fi
}

env_value() { # KEY: its value in the env file, dotenv-style (quotes, `export`), never evaluated
    local line value
    [[ -r $env_file ]] || return 0
    line=$(grep -E "^[[:space:]]*(export[[:space:]]+)?$1[[:space:]]*=" -- "$env_file" 2>/dev/null |
        tail -n 1)
    value=${line#*=}
    value=${value#"${value%%[![:space:]]*}"}
    if [[ $value == \'*\'* ]]; then
        value=${value#\'}
        value=${value%%\'*}
    elif [[ $value == \"*\"* ]]; then
        value=${value#\"}
        value=${value%%\"*}
    else
        value=${value%%[[:space:]]#*}
        value=${value%"${value##*[![:space:]]}"}
    fi
    printf '%s' "$value"
}

url_origin() { # scheme://host[:port] of a URL: what a log may show of it
    local rest=${1#*://} host
    host=${rest%%[/?#]*}
    printf '%s://%s' "${1%%://*}" "${host##*@}"
}

ping_fail() { # the dead-man's switch's /fail; a monitor that does not answer changes nothing
    local url=${REFSYNC_PING_URL:-${WDH_REFERENCE_SYNC_PING_URL:-}} full
    [[ -n $url ]] || url=$(env_value WDH_REFERENCE_SYNC_PING_URL)
    [[ -n $url ]] || return 0
    full="${url%/}/fail"
    full=${full//\\/\\\\}
    # the URL goes to curl on stdin, never on its command line (ps shows that to every user)
    if ! printf 'url = "%s"\n' "${full//\"/\\\"}" |
        curl --fail --silent --show-error --max-time 5 --output /dev/null --config - 2>/dev/null
    then
        log_line WARNING nightly.ping_failed "ping $(url_origin "$url") (/fail) failed"
    fi
}

fail_exit() { # exit_code event message: a JSON line in the log and on stderr, /fail, exit
    local line
    line=$(json_line ERROR "$2" "$3" "$1")
    if [[ -n $log_ok ]]; then printf '%s\n' "$line" >>"$log_file"; fi
    printf '%s\n' "$line" >&2
    ping_fail
    exit "$1"
}

prestart_failure() { # message: refsync never started
    fail_exit "$PRESTART_EXIT" nightly.prestart_failed "$1"
}

seconds_of() { # a duration as refsync reads it (90, 90s, 5m, 1.5h, 1d) in whole seconds
    [[ $1 =~ ^[[:space:]]*([0-9]+(\.[0-9]+)?)([smhd]?)[[:space:]]*$ ]] || return 1
    local unit=1
    case ${BASH_REMATCH[3]} in
        m) unit=60 ;;
        h) unit=3600 ;;
        d) unit=86400 ;;
    esac
    awk -v n="${BASH_REMATCH[1]}" -v unit="$unit" \
        'BEGIN { s = n * unit; printf "%d", (s == int(s)) ? s : int(s) + 1 }'
}

if [[ $EUID -eq 0 && ${REFSYNC_ALLOW_ROOT:-} != yes ]]; then
    # no log line: the log would become root's; stderr (the cron mail) says it
    prestart_failure "refusing to run as root: the log and lock files would become root's and \
the next run as the service user would fail. Run it as the service user: \
runuser -u refsync -- $script_dir/$(basename -- "${BASH_SOURCE[0]}")"
fi

# cron runs jobs with PATH=/usr/bin:/bin; uv usually lives in /usr/local/bin or ~/.local/bin
export PATH="$PATH:/usr/local/bin:${HOME:-/nonexistent}/.local/bin"

if mkdir -p -- "$(dirname -- "$log_file")" 2>/dev/null && { : >>"$log_file"; } 2>/dev/null; then
    log_ok=1
else
    prestart_failure "cannot write the log $log_file as $(id -un): create its directory with
install -d -o $(id -un) -g $(id -gn) -m 0750 $(dirname -- "$log_file")"
fi
cd -- "$REFSYNC_ETC" 2>/dev/null ||
    prestart_failure "cannot cd to the config directory REFSYNC_ETC=$REFSYNC_ETC as $(id -un)"

env_args=()
# without REFSYNC_ENV_FILE the default may be absent (settings from the environment)
if [[ -e $env_file || -n ${REFSYNC_ENV_FILE:-} ]]; then
    [[ -r $env_file ]] || prestart_failure "cannot read the env file $env_file as $(id -un):
chown root:$(id -gn) $env_file && chmod 0640 $env_file"
    env_args=(--env-file "$env_file")
    mode=$(stat -L -c %a -- "$env_file" 2>/dev/null || echo 0)
    if (((8#$mode & 8#004) != 0)); then
        log_line WARNING nightly.env_file_readable "the env file $env_file holds secrets and \
is readable by every user (mode $mode): chmod 0640 $env_file"
    fi
fi

max_run_time=${REFSYNC_MAX_RUN_TIME:-${WDH_REFERENCE_SYNC_MAX_RUN_TIME:-}}
[[ -n $max_run_time ]] || max_run_time=$(env_value WDH_REFERENCE_SYNC_MAX_RUN_TIME)
max_run_time=${max_run_time:-4h}
max_run_s=$(seconds_of "$max_run_time") ||
    prestart_failure "REFSYNC_MAX_RUN_TIME=$max_run_time is not a duration like 4h, 90m or 3600s"
margin=${REFSYNC_OUTER_MARGIN:-10m}
margin_s=$(seconds_of "$margin") ||
    prestart_failure "REFSYNC_OUTER_MARGIN=$margin is not a duration like 10m or 600s"
outer_s=$((max_run_s + margin_s))

if [[ -n ${REFSYNC_BIN:-} ]]; then
    read -r -a cmd <<<"$REFSYNC_BIN"
elif [[ -x $REFSYNC_HOME/.venv/bin/refsync ]]; then
    cmd=("$REFSYNC_HOME/.venv/bin/refsync")
else
    cmd=(uv run --frozen --project "$REFSYNC_HOME" refsync)
fi

# refsync must be able to start at all (an interpreter this user can execute, an intact venv)
if ! started=$("${cmd[@]}" --version 2>&1); then
    prestart_failure "cannot start refsync (${cmd[*]} --version): ${started:0:300}"
fi
started=${started##*$'\n'}  # the last line: `refsync X.Y.Z` (uv may say more before it)
version=${started##* }

metrics_args=()
if [[ -n $metrics_file ]]; then
    # 0755, parents too: node_exporter, another user, must be able to read it
    metrics_dir=$(dirname -- "$metrics_file")
    if ! (umask 022 && mkdir -p -- "$metrics_dir") 2>/dev/null || [[ ! -w $metrics_dir ]]; then
        prestart_failure "cannot create or write the metrics directory $metrics_dir as \
$(id -un): create it (install -d -o $(id -un) -m 0755 DIR), give $(id -un) write access to \
it (setfacl -m u:$(id -un):rwx DIR), or set REFSYNC_METRICS_FILE to a writable path (empty: \
no metrics)"
    fi
    metrics_args=(--metrics-file "$metrics_file")
fi

mkdir -p -- "$(dirname -- "$lock_file")" 2>/dev/null
{ exec 9>>"$lock_file"; } 2>/dev/null || prestart_failure "cannot open the lock file $lock_file as \
$(id -un)"
if ! flock -n 9; then
    msg="another nightly run holds $lock_file; not starting"
    log_line WARNING nightly.locked "$msg" 3
    printf 'refsync-nightly: %s (exit 3)\n' "$msg" >&2
    ping_fail
    exit 3
fi

args=("${cmd[@]}" sync --log-format json "${env_args[@]}" "${metrics_args[@]}" "$@")
log_line INFO nightly.start "starting refsync $version (outer bound ${outer_s}s): ${args[*]}"

# refsync runs under `timeout` in the background and the shell waits, so SIGTERM/SIGINT sent
# to this script reach it (timeout passes them on). The lock (fd 9) is inherited: it stays
# held until refsync itself has exited.
timeout --kill-after="${KILL_AFTER_S}s" "${outer_s}s" "${args[@]}" >>"$log_file" 2>&1 &
child=$!
got_signal=""
trap 'got_signal=TERM; kill -TERM "$child" 2>/dev/null' TERM
trap 'got_signal=INT; kill -INT "$child" 2>/dev/null' INT
while :; do
    got_signal=""
    rc=0
    wait "$child" || rc=$?
    # `wait` also returns when a trapped signal arrives: wait again for the real exit status
    [[ -z $got_signal ]] && break
done
trap - TERM INT

problems() { # refsync's own account of what needs a look, one line a table, indented
    timeout 120 "${cmd[@]}" status --problems --no-fail "${env_args[@]}" 2>&1 |
        head -n 40 | sed 's/^/  /'
}

if [[ $rc -eq 0 ]]; then
    log_line INFO nightly.finish "refsync sync exited 0" "$rc"
    exit 0
fi
if [[ $rc -eq $TIMED_OUT_EXIT || $rc -eq $((128 + 9)) ]]; then
    msg="refsync sync ran past the outer bound of ${outer_s}s (max_run_time $max_run_time + \
$margin) and was stopped (exit $rc)"
    log_line ERROR nightly.timeout "$msg" "$rc"
else
    msg="refsync sync exited $rc"
    log_line ERROR nightly.finish "$msg; see the lines above" "$rc"
fi
printf 'refsync-nightly: %s; details in %s\n' "$msg" "$log_file" >&2
problems >&2
ping_fail
exit "$rc"
