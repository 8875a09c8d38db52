#!/usr/bin/env bash
# Starts PostgreSQL, RabbitMQ and Redis on 127.0.0.1 when they are stopped, and
# installs them from Debian's packages when they are missing. Running it again
# changes nothing.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() { # what, seconds, command...
  local what=$1 limit=$2; shift 2
  for _ in $(seq "$((limit * 5))"); do "$@" && return 0; sleep 0.2; done
  log "$what did not come up within ${limit}s"; return 1
}

missing=()
command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# PostgreSQL, with trust authentication on the loopback (local development only).
if ! port_open 5432; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
fi
wait_for PostgreSQL 60 pg_isready -q -h 127.0.0.1 -p 5432
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  log "allowing trust authentication from the loopback in $hba"
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  wait_for "PostgreSQL trust login" 30 psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1'
fi

# Redis, keeping nothing on disk.
if ! port_open 6379; then
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/syncfleet.log
fi
wait_for Redis 30 port_open 6379

# RabbitMQ.
if ! port_open 5672; then
  log "starting RabbitMQ"
  # The suite opens many connections and quorum queues at once: the default
  # 1024 descriptors are not enough (the node stops answering). Debian's
  # rabbitmq-server switches to its user through PAM, which applies this.
  if [ -d /etc/security/limits.d ] && [ ! -e /etc/security/limits.d/rabbitmq.conf ]; then
    printf 'rabbitmq soft nofile 20000\nrabbitmq hard nofile 20000\n' >/etc/security/limits.d/rabbitmq.conf 2>/dev/null || true
  fi
  rabbitmq-server -detached
fi
wait_for RabbitMQ 120 port_open 5672
rabbitmqctl -q await_startup --timeout 120 >/dev/null
# The operator console reads queue rates from the management API
# (127.0.0.1:15672); enabling an enabled plugin changes nothing.
rabbitmq-plugins -q enable rabbitmq_management >/dev/null
wait_for "RabbitMQ's management API" 60 port_open 15672
log "PostgreSQL, RabbitMQ and Redis are up"
