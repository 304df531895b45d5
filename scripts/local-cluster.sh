#!/usr/bin/env bash
# Runs a three-node Tern cluster on this machine until Ctrl-C, then stops
# every node with SIGTERM so each leaves the cluster cleanly.
#
#   node   clients  cluster  monitoring  data
#   n1     4222     6222     8222        ./data/cluster/n1
#   n2     4223     6223     8223        ./data/cluster/n2
#   n3     4224     6224     8224        ./data/cluster/n3
#
# Usage: scripts/local-cluster.sh [path/to/tern-server]
set -euo pipefail

BIN=${1:-./target/release/tern-server}
DATA=${DATA_DIR:-./data}/cluster
ROUTES=nats-route://127.0.0.1:6222,nats-route://127.0.0.1:6223,nats-route://127.0.0.1:6224
pids=()

stop() {
    trap - INT TERM EXIT
    echo "stopping the cluster..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    echo "stopped"
}
trap stop INT TERM EXIT

for i in 1 2 3; do
    mkdir -p "$DATA/n$i"
    "$BIN" -n "n$i" -a 127.0.0.1 -p $((4221 + i)) -m $((8221 + i)) -js -sd "$DATA/n$i" \
        --cluster_name local --cluster "nats://127.0.0.1:$((6221 + i))" --routes "$ROUTES" \
        >"$DATA/n$i.log" 2>&1 &
    pids+=("$!")
done

for _ in $(seq 1 100); do
    if curl -fs http://127.0.0.1:8222/routez 2>/dev/null | grep -q '"num_routes": 2'; then
        break
    fi
    sleep 0.1
done
echo "cluster 'local' is up: nats://127.0.0.1:4222, nats://127.0.0.1:4223, nats://127.0.0.1:4224"
echo "routes: curl http://127.0.0.1:8222/routez   logs: $DATA/n*.log   stop: Ctrl-C"
wait
