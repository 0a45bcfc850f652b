#!/usr/bin/env bash
# Provision one mistnet job on RabbitMQ: a user per edge (topic permissions: it may publish only
# <job>.<edge> on mistnet.features and its edge.done/edge.status events), a cloud user, a read-only
# monitor user, the dead-letter policy, and the exchanges and queues of deploy/rabbitmq/definitions.json.
# Idempotent: existing users keep their passwords unless the passwords file holds one for them.
#
# Usage: deploy/rabbitmq/provision.sh [--rabbitmqctl] JOB EDGE [EDGE...]
#   With `mistnet` on PATH it runs `mistnet provision` (management API + AMQP; also reads
#   MISTNET_MANAGEMENT_URL, MISTNET_ADMIN_USER, MISTNET_ADMIN_PASSWORD). With --rabbitmqctl, or without
#   mistnet, it uses rabbitmqctl on the broker host instead: no Python needed.
# Env: MISTNET_VHOST (/), MISTNET_CLOUD_USER (mistnet-cloud), MISTNET_MONITOR_USER (mistnet-monitor),
#   MISTNET_PASSWORDS_FILE (./mistnet-passwords.json: read, and new passwords added, mode 0600),
#   MISTNET_DELIVERY_LIMIT (5), MISTNET_EVENTS_MAX_AGE (7D), RABBITMQCTL (rabbitmqctl).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mode=auto
if [ "${1:-}" = "--rabbitmqctl" ]; then mode=rabbitmqctl; shift; fi
if [ $# -lt 2 ]; then
  sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
job=$1; shift
edges=("$@")
vhost=${MISTNET_VHOST:-/}
cloud=${MISTNET_CLOUD_USER:-mistnet-cloud}
monitor=${MISTNET_MONITOR_USER:-mistnet-monitor}
passwords_file=${MISTNET_PASSWORDS_FILE:-./mistnet-passwords.json}
delivery_limit=${MISTNET_DELIVERY_LIMIT:-5}
max_age=${MISTNET_EVENTS_MAX_AGE:-7D}
rabbitmqctl=${RABBITMQCTL:-rabbitmqctl}

name_ok() { [[ $1 =~ ^[a-z0-9][a-z0-9_-]{0,62}$ ]]; }
name_ok "$job" || { echo "job name '$job' is not allowed: 1-63 of a-z 0-9 - _" >&2; exit 2; }
for edge in "${edges[@]}"; do
  name_ok "$edge" || { echo "edge name '$edge' is not allowed: 1-63 of a-z 0-9 - _" >&2; exit 2; }
done
case $vhost in *'"'* | *'\'*) echo "vhost '$vhost' may not contain quotes or backslashes" >&2; exit 2 ;; esac
[[ $delivery_limit =~ ^[0-9]+$ ]] || { echo "MISTNET_DELIVERY_LIMIT must be a number" >&2; exit 2; }
[[ $max_age =~ ^[0-9]+[YMDhms]$ ]] || { echo "MISTNET_EVENTS_MAX_AGE must look like 7D or 12h" >&2; exit 2; }

if [ "$mode" = auto ] && command -v mistnet >/dev/null 2>&1; then
  IFS=,; edge_list="${edges[*]}"; unset IFS
  exec mistnet provision --vhost "$vhost" --job "$job" --edges "$edge_list" --cloud-user "$cloud" \
    --monitor-user "$monitor" --passwords-file "$passwords_file" \
    --delivery-limit "$delivery_limit" --events-max-age "$max_age"
fi

ctl() { "$rabbitmqctl" -q "$@"; }
# Regex-escape a name as Python's re.escape does for [a-z0-9._-], so permissions match `mistnet provision`'s.
esc() { printf '%s' "$1" | sed 's/[.-]/\\&/g'; }
stored_password() {
  [ -f "$passwords_file" ] || return 0
  sed -n "s/^ *\"$1\": \"\([^\"]*\)\",\{0,1\}\$/\1/p" "$passwords_file"
}
# Add the (user password ...) pairs of $generated to the passwords file (mode 0600), before the
# users exist: a failure later never loses a password.
save_passwords() {
  local entries=() i
  if [ -f "$passwords_file" ]; then
    while IFS= read -r line; do entries+=("$line"); done < <(sed -n 's/^ *\("[^"]*": "[^"]*"\),\{0,1\}$/\1/p' "$passwords_file")
  fi
  for ((i = 0; i < ${#generated[@]}; i += 2)); do entries+=("\"${generated[i]}\": \"${generated[i + 1]}\""); done
  (
    umask 077
    {
      echo "{"
      for ((i = 0; i < ${#entries[@]}; i++)); do
        if [ $((i + 1)) -lt ${#entries[@]} ]; then echo "  ${entries[i]},"; else echo "  ${entries[i]}"; fi
      done
      echo "}"
    } >"$passwords_file.tmp"
  )
  chmod 600 "$passwords_file.tmp"
  mv "$passwords_file.tmp" "$passwords_file"
}

users=("$cloud" "${edges[@]}")
if [ -n "$monitor" ]; then users+=("$monitor"); fi
existing=$(ctl list_users --no-table-headers | cut -f1)
new_users=() generated=()
for user in "${users[@]}"; do
  password=$(stored_password "$user")
  if grep -qxF -- "$user" <<<"$existing"; then
    if [ -n "$password" ]; then ctl change_password "$user" "$password" >/dev/null; fi
    continue
  fi
  if [ -z "$password" ]; then
    password=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
    generated+=("$user" "$password")
  fi
  new_users+=("$user" "$password")
done
if [ ${#generated[@]} -gt 0 ]; then
  save_passwords
  echo "new passwords for $((${#generated[@]} / 2)) user(s) written to $passwords_file" >&2
fi
for ((i = 0; i < ${#new_users[@]}; i += 2)); do ctl add_user "${new_users[i]}" "${new_users[i + 1]}" >/dev/null; done
if [ -n "$monitor" ]; then ctl set_user_tags "$monitor" monitoring >/dev/null; fi

# rabbitmqctl may run as the rabbitmq user (Debian's wrapper does) and 3.10 cannot read stdin ("-"):
# hand it world-readable files. They hold names and permission patterns, no secrets.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
import() { chmod 644 "$1"; ctl import_definitions "$1" >/dev/null; }

# 1. The template (written for job "mistnet" in vhost "/": vhost, exchanges, queues, bindings, policy)
#    rewritten for this job and vhost.
sed -e "s|\"vhost\": \"/\"|\"vhost\": \"$vhost\"|g; s|{\"name\": \"/\"}|{\"name\": \"$vhost\"}|" \
  -e "s|\"mistnet\.mistnet\.|\"mistnet.$job.|g; s|\"routing_key\": \"mistnet\.|\"routing_key\": \"$job.|g" \
  -e "s|\"x-delivery-limit\": 5|\"x-delivery-limit\": $delivery_limit|; s|\"x-max-age\": \"7D\"|\"x-max-age\": \"$max_age\"|" \
  "$here/definitions.json" >"$work/topology.json"
import "$work/topology.json"

# 2. Per-edge control queues and bindings, and everyone's permissions (same patterns as shared/amqp/provision.py).
json_string() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g')"; }
j=$(esc "$job")
{
  queues=() bindings=() perms=() topics=()
  perms+=("{\"user\": \"$cloud\", \"vhost\": \"$vhost\", \"configure\": $(json_string '^mistnet\..*'), \"write\": $(json_string '^mistnet\..*'), \"read\": $(json_string '^mistnet\..*')}")
  for edge in "${edges[@]}"; do
    e=$(esc "$edge")
    queues+=("{\"name\": \"mistnet.$job.control.$edge\", \"vhost\": \"$vhost\", \"durable\": true, \"auto_delete\": false, \"arguments\": {\"x-queue-type\": \"quorum\"}}")
    for key in all "$edge"; do
      bindings+=("{\"source\": \"mistnet.control\", \"vhost\": \"$vhost\", \"destination\": \"mistnet.$job.control.$edge\", \"destination_type\": \"queue\", \"routing_key\": \"$job.control.$key\", \"arguments\": {}}")
    done
    perms+=("{\"user\": \"$edge\", \"vhost\": \"$vhost\", \"configure\": \"^\$\", \"write\": $(json_string '^(mistnet\.features|mistnet\.events)$'), \"read\": $(json_string "^(mistnet\\.$j\\.control\\.$e)\$")}")
    topics+=("{\"user\": \"$edge\", \"vhost\": \"$vhost\", \"exchange\": \"mistnet.features\", \"write\": $(json_string "^($j\\.$e)\$"), \"read\": \"^\$\"}")
    topics+=("{\"user\": \"$edge\", \"vhost\": \"$vhost\", \"exchange\": \"mistnet.events\", \"write\": $(json_string "^($j\\.edge\\.done|$j\\.edge\\.status)\$"), \"read\": \"^\$\"}")
  done
  if [ -n "$monitor" ]; then
    own='^(amq\.gen-.*|mistnet\.monitor\..*)$'
    perms+=("{\"user\": \"$monitor\", \"vhost\": \"$vhost\", \"configure\": $(json_string "$own"), \"write\": $(json_string "$own"), \"read\": $(json_string '^(amq\.gen-.*|mistnet\.monitor\..*|mistnet\.events|mistnet\.events\.history)$')}")
  fi
  join() { local IFS=,; printf '%s' "$*"; }
  printf '{"queues": [%s], "bindings": [%s], "permissions": [%s], "topic_permissions": [%s]}\n' \
    "$(join "${queues[@]}")" "$(join "${bindings[@]}")" "$(join "${perms[@]}")" "$(join "${topics[@]}")"
} >"$work/access.json"
import "$work/access.json"

echo "job $job provisioned in vhost '$vhost' (users: ${users[*]})"
