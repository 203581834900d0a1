#!/usr/bin/env bash
# make run without a cluster: podwall's sidecar guards a demo "pod" (a network namespace) that talks to
# a "peer" namespace over a veth pair, under a built-in policy that allows the peer's port 80 and
# nothing else. Verdict lines stream to this terminal; Ctrl-C removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make run needs root (network namespaces, nftables)" >&2; exit 1; }
go build -ldflags "-X podwall.io/podwall/internal/version.Version=$(hack/version.sh)" -o bin/ ./cmd/podwall-sidecar

pod=pw-demo-pod peer=pw-demo-peer
work=$(mktemp -d)
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$pod" 2>/dev/null || true
  ip netns del "$peer" 2>/dev/null || true
  rm -rf "$work"
  echo "demo removed"
}
trap cleanup EXIT INT TERM

ip netns add "$pod"; ip netns add "$peer"
ip link add pwdemo0 netns "$pod" type veth peer name pwdemo1 netns "$peer"
ip -n "$pod" addr add 10.254.0.1/24 dev pwdemo0; ip -n "$peer" addr add 10.254.0.2/24 dev pwdemo1
for ns in "$pod" "$peer"; do ip -n "$ns" link set lo up; done
ip -n "$pod" link set pwdemo0 up; ip -n "$peer" link set pwdemo1 up
for port in 80 8080; do
  ip netns exec "$peer" python3 -m http.server "$port" --bind 10.254.0.2 >/dev/null 2>&1 & pids+=($!)
done

cat > "$work/policy.yaml" <<POLICY
namespace: demo
workload: Deployment/client
revision: 1
mode: Protect
egress:
- id: web
  origin: user
  peer: workload:demo/Deployment/web
  cidrs: [10.254.0.2/32]
  ports: [{protocol: TCP, port: 80}]
names:
  10.254.0.2: workload:demo/Deployment/web
POLICY

ip netns exec "$pod" bin/podwall-sidecar --config "$work/config.yaml" --policy-file "$work/policy.yaml" \
  --policy-cache-dir "$work" --listen-addr 127.0.0.1:9947 --log-allows all \
  --pod-name client-0 --pod-namespace demo --workload Deployment/client 2>"$work/sidecar.err" & pids+=($!)
for _ in $(seq 100); do
  ip netns exec "$pod" curl -sf -o /dev/null 127.0.0.1:9947/readyz && break
  sleep 0.1
done
ip netns exec "$pod" curl -sf -o /dev/null 127.0.0.1:9947/readyz || { cat "$work/sidecar.err" >&2; exit 1; }

cat <<MSG
podwall demo: the sidecar guards namespace $pod (10.254.0.1); the peer 10.254.0.2 serves :80 and :8080.
Policy: $work/policy.yaml (Protect, allows only :80) — edit it (bump revision) and watch it apply.
Try:     ip netns exec $pod curl -m 2 http://10.254.0.2:8080/     (refused at once)
Metrics: ip netns exec $pod curl -s 127.0.0.1:9947/metrics | grep ^podwall
Diagnostics: $work/sidecar.err
Verdict lines follow (the demo client connects to :80 and :8080 every 2 s). Ctrl-C to stop.
MSG
ip netns exec "$pod" bash -c 'while :; do curl -s -m 2 -o /dev/null http://10.254.0.2/; curl -s -m 2 -o /dev/null http://10.254.0.2:8080/; sleep 2; done' & pids+=($!)
wait "${pids[2]}"
