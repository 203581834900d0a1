#!/usr/bin/env bash
# Builds kubernetes-sigs/kube-network-policies (KNP), the NetworkPolicy agent make bench-peers measures
# podwall beside, from the Go module proxy in its wrapper module bench/knp (outside podwall's module),
# and caches it outside the repository, keyed by version and variant: a cached binary is never rebuilt.
#   hack/build-knp.sh [stock|compat]
# stock is KNP as released. compat is KNP with bench/knp/queue-compat.patch applied at build time: its
# nftables queue expression replaced by the xtables NFQUEUE target through nftables' compat layer, for
# kernels without nft_queue, which refuse stock KNP's whole table (it would then enforce nothing).
# Without an argument the script builds what this kernel takes: it tries a rule with the queue
# expression in a throwaway network namespace (unshare -n, so as root).
# Prints the binary's path on its last line. The binary is static: it runs alone in a one-layer image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=$(cd "$here/../bench/knp" && pwd)
knp=sigs.k8s.io/kube-network-policies
version=$(sed -n "s|^require $knp ||p" "$module/go.mod")
cache=${PODWALL_CACHE:-$HOME/.cache/podwall}/knp-$version
mkdir -p "$cache"

variant=${1:-}
if [ -z "$variant" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "build-knp: finding whether the kernel has nft_queue needs root; or name the variant: stock or compat" >&2
    exit 2
  fi
  probe='table inet knp_probe { chain c { type filter hook input priority 0; meta l4proto tcp queue num 0; }; }'
  if echo "$probe" | unshare -n nft -f - 2>/dev/null; then variant=stock; else variant=compat; fi
fi
case $variant in
  stock|compat) ;;
  *) echo "build-knp: unknown variant $variant: want stock or compat" >&2; exit 2 ;;
esac

out=$cache/kube-network-policies-$variant
if [ ! -x "$out" ]; then
  exec 9>"$cache/.lock"
  flock 9
fi
if [ ! -x "$out" ]; then
  echo "building kube-network-policies $version ($variant) into $cache (minutes when cold)" >&2
  modfile=$module/go.mod
  if [ "$variant" = compat ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$module" && go mod download "$knp")
    cp -r "$(cd "$module" && go list -m -f '{{.Dir}}' "$knp")" "$work/src"
    chmod -R u+w "$work/src"
    patch -d "$work/src" -p1 --quiet --forward < "$module/queue-compat.patch"
    cp "$module/go.mod" "$work/go.mod"
    cp "$module/go.sum" "$work/go.sum"
    modfile=$work/go.mod
    (cd "$module" && go mod edit -modfile="$modfile" -replace "$knp=$work/src")
  fi
  (cd "$module" && CGO_ENABLED=0 go build -modfile="$modfile" -ldflags "-s -w" -o "$out.tmp" "$knp/cmd")
  mv "$out.tmp" "$out"
fi
echo "$out"
