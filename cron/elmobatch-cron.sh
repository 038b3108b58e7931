#!/bin/sh
# Run one elmobatch job from cron: a minimal, known environment; output appended to a rotating log.
#
#   elmobatch-cron.sh JOB.toml [LOG_FILE]
#
# ELMOBATCH   the elmobatch executable (default: the repository's .venv/bin/elmobatch, else PATH)
# LOG_MAX_BYTES, LOG_KEEP   rotate the log past this size, keeping this many old logs (10 MB, 5)
# The exit code is elmobatch run's, so cron (or a monitor) sees what happened. Only a failure to
# start (elmobatch not found, the log not writable) prints anything: that reaches cron's mail too.
set -u
if [ $# -lt 1 ]; then
    echo "usage: $0 JOB.toml [LOG_FILE]" >&2
    exit 2
fi
job=$1
here=$(cd "$(dirname "$0")" && pwd)

# cron starts jobs with almost no environment; set what elmobatch needs.
if [ -z "${HOME:-}" ]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
fi
export HOME
export PATH=/usr/local/bin:/usr/bin:/bin
export LANG=C.UTF-8 LC_ALL=C.UTF-8 PYTHONUNBUFFERED=1

log=${2:-$HOME/.local/state/elmobatch/$(basename "$job" .toml).log}
max_bytes=${LOG_MAX_BYTES:-10485760}
keep=${LOG_KEEP:-5}
mkdir -p "$(dirname "$log")"

# Rotate: log -> log.1 -> ... -> log.$keep (the oldest is dropped).
if [ -f "$log" ] && [ "$(wc -c <"$log")" -gt "$max_bytes" ]; then
    i=$keep
    while [ "$i" -gt 1 ]; do
        prev=$((i - 1))
        [ -f "$log.$prev" ] && mv -f "$log.$prev" "$log.$i"
        i=$prev
    done
    mv -f "$log" "$log.1"
fi

say() {
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) $*" >>"$log"
}
say "start job=$job pid=$$"

elmobatch=${ELMOBATCH:-$here/../.venv/bin/elmobatch}
if [ ! -x "$elmobatch" ]; then
    elmobatch=$(command -v elmobatch || true)
fi
if [ -z "$elmobatch" ]; then
    # Into the log (where the runs are read) and to stderr (which cron mails to MAILTO).
    message="error: elmobatch not found: set ELMOBATCH or create $here/../.venv (pip install -e .)"
    say "$message"
    echo "$0: $message" >&2
    say "end job=$job exit=1"
    exit 1
fi
"$elmobatch" run "$job" >>"$log" 2>&1
rc=$?
say "end job=$job exit=$rc"
exit $rc
