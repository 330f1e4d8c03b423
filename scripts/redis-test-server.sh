#!/usr/bin/env bash
# redis-test-server.sh: a throwaway redis-server for the tests, on 127.0.0.1, with no
# persistence, its files (pid, log, port) in DIR.
#
#   scripts/redis-test-server.sh start DIR [PORT]   start it; prints the port on stdout
#   scripts/redis-test-server.sh stop DIR           stop the server started in DIR
#
# Without PORT a free one is found by binding a socket to port 0 (python3), or else drawn at
# random; a port taken in between makes redis-server fail to bind, and another is tried.
# Exit status: 0; 2 usage; 3 redis-server is not installed; 1 it would not start.
set -euo pipefail

usage() {
    echo "usage: $0 start DIR [PORT] | stop DIR" >&2
    exit 2
}

[ $# -ge 2 ] || usage
cmd=$1
dir=$2

free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 40000))
    fi
}

# The pid in DIR/redis.pid when it is a live redis-server (never anything else).
our_pid() {
    local pid
    [ -f "$dir/redis.pid" ] || return 1
    pid=$(cat "$dir/redis.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [ -r "/proc/$pid/comm" ] && grep -q '^redis-server' "/proc/$pid/comm" || return 1
    echo "$pid"
}

stop_server() {
    local pid
    pid=$(our_pid) || { rm -f "$dir/redis.pid"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/redis.pid" "$dir/port"
}

case "$cmd" in
start)
    [ $# -le 3 ] || usage
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "redis-test-server: redis-server is not installed (scripts/install-deps.sh test installs it)" >&2
        exit 3
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stop_server
    for _ in $(seq 10); do
        port=${3:-$(free_port)}
        rm -f "$dir/redis.pid"
        redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$dir" \
            --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
            --protected-mode yes >/dev/null 2>&1 || true
        for _ in $(seq 50); do
            if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ] && our_pid >/dev/null; then
                echo "$port" >"$dir/port"
                echo "$port"
                exit 0
            fi
            sleep 0.1
        done
        stop_server
        [ $# -lt 3 ] || break # the port was given: no other to try
    done
    echo "redis-test-server: redis-server would not start; see $dir/redis.log" >&2
    exit 1
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$dir" ] || exit 0
    stop_server
    ;;
*)
    usage
    ;;
esac
