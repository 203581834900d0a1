#!/usr/bin/env bash
# Builds the Kubernetes and etcd binaries the tests need, and CoreDNS for the local cluster's DNS, from
# the Go module proxy and caches them outside the repository, keyed by version: a cached binary is never
# rebuilt.
#   hack/build-kube.sh [name ...]   (default: kube-apiserver etcd; "node" = the rest a local cluster needs:
#                                    kubelet kube-controller-manager kube-scheduler kube-proxy kubectl coredns)
# CoreDNS has its own version: it is cached as coredns-<version> beside the others, and the link
# "coredns" names the version this script builds.
# Prints the cache folder (usable as KUBEBUILDER_ASSETS) on its last line. The Kubernetes binaries share
# the wrapper module hack/kube and so Go's build cache: after the first, each costs only its own link.
# A lock, taken only when something is missing, serializes concurrent builders: a test starting while
# `make cluster-bin` still builds waits for it instead of building the same binary twice.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kube_version=v1.37.2
etcd_version=v3.7.3
coredns_version=$(sed -n 's|^require github.com/coredns/coredns ||p' "$here/coredns/go.mod")
cache=${PODWALL_CACHE:-$HOME/.cache/podwall}/k8s-$kube_version-etcd-$etcd_version
mkdir -p "$cache"
[ $# -gt 0 ] || set -- kube-apiserver etcd
names=()
for name in "$@"; do
  case $name in
    node) names+=(kubelet kube-controller-manager kube-scheduler kube-proxy kubectl coredns) ;;
    *) names+=("$name") ;;
  esac
done

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
for name in "${names[@]}"; do
  out=$cache/$name
  if [ "$name" = coredns ]; then
    out=$cache/coredns-$coredns_version
    [ "$(readlink "$cache/coredns" 2>/dev/null)" = "coredns-$coredns_version" ] || link_coredns=1
  fi
  [ -x "$out" ] && continue
  if [ -z "${locked:-}" ]; then exec 9>"$cache/.lock"; flock 9; locked=1; [ -x "$out" ] && continue; fi
  echo "building $name into $cache (minutes when cold)" >&2
  case $name in
    etcd) (cd "$here/etcd" && go build -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3) ;;
    # Static: it runs alone in a one-layer image (e2e/internal/images).
    coredns) (cd "$here/coredns" && CGO_ENABLED=0 go build -ldflags "-s -w" -o "$out.tmp" .) ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kube-proxy|kubelet|kubectl)
      (cd "$here/kube" && go build -ldflags "$ldflags" -o "$out.tmp" "k8s.io/kubernetes/cmd/$name") ;;
    *) echo "build-kube: unknown binary $name" >&2; exit 2 ;;
  esac
  mv "$out.tmp" "$out"
done
if [ -n "${link_coredns:-}" ]; then ln -sfn "coredns-$coredns_version" "$cache/coredns"; fi
echo "$cache"
