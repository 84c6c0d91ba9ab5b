#!/usr/bin/env bash
# Makes sure the services the bus tests use are up: PostgreSQL, Redis and
# NATS with JetStream, started with this machine kind's documented commands
# when they are down. Idempotent; exits non-zero, loudly, if one cannot be had.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure() {
    local name=$1 port=$2 start=$3
    up "$port" && return 0
    echo "$name is not listening on 127.0.0.1:$port: starting it" >&2
    sh -c "$start" || true
    for _ in $(seq 1 150); do
        up "$port" && return 0
        sleep 0.2
    done
    echo "error: $name is required on 127.0.0.1:$port and could not be started" >&2
    exit 1
}

ensure PostgreSQL 5432 \
    'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start'
ensure Redis 6379 \
    "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log"
ensure NATS 4222 \
    'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log'
