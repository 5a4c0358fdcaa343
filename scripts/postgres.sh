# Shared by scripts/test and scripts/bench: find, start or install PostgreSQL and export
# DATABASE_URL (the maintenance database; tests create their own databases from it).
# shellcheck shell=bash

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

pg_ok() { psql "$1" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_psql() {
  command -v psql >/dev/null && return
  as_root apt-get update -qq && as_root apt-get install -y -qq postgresql-client >/dev/null
}

pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

ensure_postgres() {
  if [ -n "${DATABASE_URL:-}" ]; then
    echo "using DATABASE_URL from the environment"
    return
  fi
  ensure_psql
  local system="postgres://postgres@127.0.0.1:5432/postgres"
  if pg_ok "$system"; then
    export DATABASE_URL="$system"; echo "using the PostgreSQL server on 127.0.0.1:5432"; return
  fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    local v; v="$(ls /etc/postgresql | sort -V | tail -n 1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do pg_ok "$system" && break; sleep 0.5; done
    if pg_ok "$system"; then
      export DATABASE_URL="$system"; echo "started the system PostgreSQL $v cluster"; return
    fi
  fi
  if [ -z "$(pg_bin_dir)" ]; then
    step "installing PostgreSQL"
    as_root apt-get update -qq && as_root apt-get install -y -qq postgresql >/dev/null
  fi
  local bin data="$root/target/pg" port=55432 run=()
  bin="$(pg_bin_dir)"
  local private="postgres://postgres@127.0.0.1:$port/postgres"
  if ! pg_ok "$private"; then
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$data"; run=(runuser -u postgres --); fi
    chmod 700 "$data"
    [ -f "$data/PG_VERSION" ] || "${run[@]}" "$bin/initdb" -D "$data" -U postgres --auth=trust >/dev/null
    "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/log" -w start \
      -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200" >/dev/null
  fi
  export DATABASE_URL="$private"
  echo "using a private PostgreSQL on 127.0.0.1:$port (data in target/pg)"
}

