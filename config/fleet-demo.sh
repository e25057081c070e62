#!/usr/bin/env bash
# `make fleet-demo`: one fleet on one machine. A demo PKI, a real `openssl ocsp` responder,
# Mosquitto, PostgreSQL 15, three StapleGate gateways (gw-a, gw-b, gw-c) sharing it, and HAProxy
# in front of them; then a device connected through two gateways is revoked, an operator's
# recheck on the third cuts it off everywhere, and it cannot come back through any of them.
# Everything stays up until Ctrl-C (or, with DEMO_EXIT=1, stops once shown), and every process
# started here is stopped. STAPLEGATE_BIN picks another binary (the tests use the debug build).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
demo="${DEMO_DIR:-$root/.demo-fleet}"
bin="${STAPLEGATE_BIN:-$root/.build/release/staplegate}"
pg_bin=/usr/lib/postgresql/15/bin
pids=()

cleanup() {
    trap - EXIT INT TERM
    echo
    echo "stopping the fleet demo…"
    # `openssl ocsp -multi` leads its own process group and ignores SIGTERM
    # while its workers live, so the whole group is signalled; anything still there after
    # five seconds is killed, so that the demo never hangs on its way out.
    [ -z "${ocsp_pid:-}" ] || kill -TERM -- "-$ocsp_pid" 2>/dev/null || true
    # PostgreSQL runs under runuser, which does not pass SIGTERM on: its postmaster is told
    # directly (SIGINT: fast shutdown, open connections rolled back).
    [ ! -f "$demo/pg/data/postmaster.pid" ] || kill -INT "$(head -1 "$demo/pg/data/postmaster.pid")" 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + 5))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    [ -z "${ocsp_pid:-}" ] || kill -KILL -- "-$ocsp_pid" 2>/dev/null || true
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "all fleet demo processes stopped."
}
trap cleanup EXIT
trap 'exit 0' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {  # the preferred port when free (and not taken by this script), else the next one
    local port=$1
    while ! port_free "$port" || [[ " ${taken:-} " == *" $port "* ]]; do port=$((port + 1)); done
    taken="${taken:-} $port"
    echo "$port"
}
wait_for_port() {  # port, what, pid
    local deadline=$((SECONDS + 30))
    until ! port_free "$1"; do
        kill -0 "$3" 2>/dev/null || { echo "fleet demo: $2 exited; see $demo/$2.log" >&2; tail -20 "$demo/$2.log" >&2; exit 1; }
        [ $SECONDS -lt $deadline ] || { echo "fleet demo: $2 did not listen on port $1 within 30 s" >&2; exit 1; }
        sleep 0.1
    done
}
wait_for() {  # seconds, what, command…: until the command succeeds
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "fleet demo: $what did not happen within the deadline" >&2; exit 1; }
        sleep 0.1
    done
}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
as_postgres() {  # PostgreSQL refuses to run as root
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

[ -x "$bin" ] || { echo "fleet demo: $bin missing; run 'make fleet-demo' (it builds first)" >&2; exit 1; }
[ -x "$pg_bin/postgres" ] || { echo "fleet demo: $pg_bin/postgres missing: install Debian's postgresql (make deps)" >&2; exit 1; }
command -v haproxy >/dev/null || { echo "fleet demo: haproxy missing: install Debian's haproxy (make deps)" >&2; exit 1; }
balancer_port=$(pick_port 8883)
gateway_ports=("$(pick_port 8884)" "$(pick_port 8885)" "$(pick_port 8886)")
broker_port=$(pick_port 1883)
ocsp_port=$(pick_port 8888)
pg_port=$(pick_port 5433)
rm -rf "$demo"
mkdir -p "$demo"
chmod 755 "$demo"
# The postgres user must reach its data directory through every folder above it.
if [ "$(id -u)" -eq 0 ] && ! runuser -u postgres -- test -x "$demo"; then
    echo "fleet demo: the postgres user cannot reach $demo (a folder above it is not searchable); set DEMO_DIR elsewhere" >&2
    exit 1
fi

step "demo PKI in $demo/pki"
"$root/certs/make-demo-pki.sh" --out "$demo/pki" --ocsp-url "http://127.0.0.1:$ocsp_port" --force >/dev/null
pki="$demo/pki"

step "OCSP responder (openssl ocsp) on 127.0.0.1:$ocsp_port"
openssl ocsp -index "$pki/index.txt" -CA "$pki/issuing-ca.pem" -rsigner "$pki/ocsp-signer.pem" \
    -rkey "$pki/ocsp-signer.key" -port "$ocsp_port" -nmin 5 -multi 2 >"$demo/ocsp.log" 2>&1 &
ocsp_pid=$!
pids+=($ocsp_pid)
wait_for_port "$ocsp_port" ocsp $ocsp_pid

step "Mosquitto on 127.0.0.1:$broker_port"
sed "s/^listener 1883 127.0.0.1/listener $broker_port 127.0.0.1/" "$root/config/mosquitto.conf" >"$demo/mosquitto.conf"
chmod 644 "$demo/mosquitto.conf"
mosquitto -c "$demo/mosquitto.conf" >"$demo/mosquitto.log" 2>&1 &
pids+=($!)
wait_for_port "$broker_port" mosquitto $!

step "PostgreSQL 15 on 127.0.0.1:$pg_port (database staplegate)"
mkdir -p "$demo/pg"
[ "$(id -u)" -ne 0 ] || chown postgres: "$demo/pg"
as_postgres "$pg_bin/initdb" -D "$demo/pg/data" -A trust -U postgres --no-sync >"$demo/initdb.log" 2>&1
as_postgres "$pg_bin/postgres" -D "$demo/pg/data" -p "$pg_port" -k "$demo/pg" -c listen_addresses=127.0.0.1 \
    -c fsync=off >"$demo/postgres.log" 2>&1 &
pids+=($!)
wait_for_port "$pg_port" postgres $!
wait_for 30 "PostgreSQL to accept connections" psql -h 127.0.0.1 -p "$pg_port" -U postgres -c 'SELECT 1'
psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -c 'CREATE DATABASE staplegate'

names=(gw-a gw-b gw-c)
for i in 0 1 2; do
    name=${names[$i]}
    step "gateway $name on port ${gateway_ports[$i]} (fleet store: PostgreSQL)"
    mkdir -p "$demo/$name"
    cat >"$demo/$name/staplegate.yaml" <<YAML
# Generated by config/fleet-demo.sh: gateway $name of a three-gateway fleet.
listen: { address: "127.0.0.1", port: ${gateway_ports[$i]} }
tls:
  certificates:
    - { certificate: ../pki/server.pem, key: ../pki/server.key }
  device_ca: ../pki/ca-chain.pem
upstream: { address: 127.0.0.1, port: $broker_port }
logging: { level: info }
state_directory: state
admin: { enabled: false }
fleet:
  store: postgres
  url: postgres://postgres@127.0.0.1:$pg_port/staplegate
  tls: disable
  instance: $name
YAML
    "$bin" run --config "$demo/$name/staplegate.yaml" >"$demo/$name.log" 2>&1 &
    pids+=($!)
    wait_for_port "${gateway_ports[$i]}" "$name" $!
done

step "HAProxy on 127.0.0.1:$balancer_port → gw-a, gw-b, gw-c (round robin)"
cat >"$demo/haproxy.cfg" <<CFG
global
    log stderr format raw local0 info
defaults
    mode tcp
    log global
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend devices
    bind 127.0.0.1:$balancer_port
    default_backend gateways
backend gateways
    balance roundrobin
    server gw-a 127.0.0.1:${gateway_ports[0]}
    server gw-b 127.0.0.1:${gateway_ports[1]}
    server gw-c 127.0.0.1:${gateway_ports[2]}
CFG
haproxy -db -f "$demo/haproxy.cfg" >"$demo/haproxy.log" 2>&1 &
pids+=($!)
wait_for_port "$balancer_port" haproxy $!

publish() {  # device, port: one QoS 1 message; succeeds when the broker took it
    mosquitto_pub -d -h localhost -p "$2" --cafile "$pki/ca-chain.pem" --cert "$pki/$1.pem" --key "$pki/$1.key" \
        -i "$1-$RANDOM" -t "demo/$1" -q 1 -m "hello from $1" 2>&1
}

step "three devices publish through the balancer; each gateway admits one"
for device in device-1 device-2 device-3; do publish "$device" "$balancer_port" | grep -E "CONNACK|alert" | sed "s/^/  $device: /"; done
psql -h 127.0.0.1 -p "$pg_port" -U postgres -d staplegate -c \
    'SELECT serial_hex, outcome, identity, written_by AS asked_by FROM device_ocsp_status ORDER BY identity'

step "device-to-revoke connects to gw-b and to gw-c (two sessions)"
subscriber() {  # name, port
    stdbuf -oL mosquitto_sub -d -h localhost -p "$2" --cafile "$pki/ca-chain.pem" --cert "$pki/device-to-revoke.pem" \
        --key "$pki/device-to-revoke.key" -i "revoke-$1" -t "demo/$1" >"$demo/sub-$1.log" 2>&1 &
    echo $!
}
sub_b=$(subscriber gw-b "${gateway_ports[1]}")
sub_c=$(subscriber gw-c "${gateway_ports[2]}")
pids+=("$sub_b" "$sub_c")
subscribed() { grep -q "received SUBACK" "$demo/sub-gw-b.log" && grep -q "received SUBACK" "$demo/sub-gw-c.log"; }
wait_for 20 "the sessions on gw-b and gw-c" subscribed
echo "  connected: through gw-b and through gw-c"

step "revoked at the CA; an operator asks gw-a (which never saw the device) to recheck it"
"$root/certs/make-demo-pki.sh" revoke --out "$pki" device-to-revoke >/dev/null
# `openssl ocsp -multi` workers each answer once from the old index: ask until it says revoked.
revoked_at_responder() {
    openssl ocsp -issuer "$pki/issuing-ca.pem" -cert "$pki/device-to-revoke.pem" -url "http://127.0.0.1:$ocsp_port" \
        -CAfile "$pki/ca-chain.pem" 2>/dev/null | grep -q ": revoked"
}
in_a_row=0 deadline=$((SECONDS + 20))
while [ "$in_a_row" -lt 3 ]; do
    if revoked_at_responder; then in_a_row=$((in_a_row + 1)); else in_a_row=0; fi
    [ $SECONDS -lt $deadline ] || { echo "fleet demo: the responder does not answer revoked" >&2; exit 1; }
done
set +e
"$bin" ocsp recheck --device device-to-revoke --config "$demo/gw-a/staplegate.yaml" | sed 's/^/  /'
set -e

step "its sessions on gw-b and gw-c are closed; it cannot come back through any gateway"
wait_for 10 "the session on gw-b to close" bash -c "! kill -0 $sub_b 2>/dev/null"
wait_for 10 "the session on gw-c to close" bash -c "! kill -0 $sub_c 2>/dev/null"
echo "  gw-b: session closed;  gw-c: session closed"
refused_everywhere=1
for i in 0 1 2; do
    answer=$(publish device-to-revoke "${gateway_ports[$i]}" | grep -io "alert certificate revoked" | head -1 || true)
    echo "  ${names[$i]}: ${answer:-admitted}"
    [ -n "$answer" ] || refused_everywhere=0
done
[ "$refused_everywhere" -eq 1 ] || { echo "fleet demo: a gateway admitted the revoked device" >&2; exit 1; }
echo "fleet demo: the revoked device is refused by every gateway of the fleet"

[ "${DEMO_EXIT:-0}" != 1 ] || exit 0
cat <<TXT

The fleet is up. Try it yourself (from $root):
  mosquitto_pub -h localhost -p $balancer_port --cafile $pki/ca-chain.pem \\
      --cert $pki/device-2.pem --key $pki/device-2.key -t demo/device-2 -m hi
  $bin ocsp cache --config $demo/gw-c/staplegate.yaml
  psql -h 127.0.0.1 -p $pg_port -U postgres -d staplegate -c 'TABLE fleet_instance'
Logs: $demo/*.log.  Press Ctrl-C to stop everything.
TXT
wait
