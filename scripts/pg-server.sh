#!/usr/bin/env bash
# A throw-away PostgreSQL server, for the tests and for trying optx's server store: a
# cluster in a directory of your choice, on a free loopback port, no system service.
#
#   scripts/pg-server.sh start DIR     start it; prints its URL (also in DIR/url)
#   scripts/pg-server.sh stop DIR      stop it (DIR stays; remove it yourself)
#   scripts/pg-server.sh restart DIR   stop it as a crash would (immediate), start it again
#
# Connections over TCP need the password (scram-sha-256: the URL carries it); the socket
# in DIR is trusted. Installs Debian's `postgresql` package if it is missing (as root).
set -euo pipefail
cmd=${1:?usage: pg-server.sh start|stop|restart DIR}
dir=${2:?usage: pg-server.sh start|stop|restart DIR}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bin" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "pg-server.sh: PostgreSQL is not installed: apt-get install postgresql (as root)" >&2
    exit 1
  fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

# initdb refuses to run as root: the server runs as the package's `postgres` user then.
as_server() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$1"; else sh -c "$1"; fi
}

start_server() {
  port=$(cat "$dir/port")
  as_server "'$bin/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c max_connections=300\" start" >/dev/null
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; chmod 755 "$dir"; fi
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' > "$dir/port"
    printf 'optx\n' > "$dir/pw"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir/pw" "$dir/port"; fi
    as_server "'$bin/initdb' -D '$dir/data' -U postgres --auth-local=trust --auth-host=scram-sha-256 --pwfile='$dir/pw'" >/dev/null
    start_server
    as_server "'$bin/createdb' -h '$dir' -p $(cat "$dir/port") -U postgres optx"
    url="postgresql://postgres:optx@127.0.0.1:$(cat "$dir/port")/optx"
    echo "$url" > "$dir/url"
    echo "$url"
    ;;
  stop)
    [ -d "$dir/data" ] && as_server "'$bin/pg_ctl' -D '$dir/data' -m fast -w stop" >/dev/null || true
    ;;
  restart)
    as_server "'$bin/pg_ctl' -D '$dir/data' -m immediate -w stop" >/dev/null
    start_server
    ;;
  *)
    echo "pg-server.sh: unknown command $cmd (start, stop, restart)" >&2
    exit 2
    ;;
esac
