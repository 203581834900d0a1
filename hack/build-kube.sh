#!/usr/bin/env bash
# Builds the Kubernetes and etcd binaries the tests need from the Go module proxy and caches them
# outside the repository, keyed by version: a cached binary is never rebuilt.
#   hack/build-kube.sh [name ...]   (default: kube-apiserver etcd)
# Prints the cache folder (usable as KUBEBUILDER_ASSETS) on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kube_version=v1.37.2
etcd_version=v3.7.3
cache=${PODWALL_CACHE:-$HOME/.cache/podwall}/k8s-$kube_version-etcd-$etcd_version
mkdir -p "$cache"
[ $# -gt 0 ] || set -- kube-apiserver etcd

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean"
for name in "$@"; do
  out=$cache/$name
  [ -x "$out" ] && continue
  echo "building $name into $cache (minutes when cold)" >&2
  case $name in
    etcd) (cd "$here/etcd" && go build -ldflags "-s -w" -o "$out.tmp" go.etcd.io/etcd/server/v3) ;;
    kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kubectl)
      (cd "$here/kube" && go build -ldflags "$ldflags" -o "$out.tmp" "k8s.io/kubernetes/cmd/$name") ;;
    *) echo "build-kube: unknown binary $name" >&2; exit 2 ;;
  esac
  mv "$out.tmp" "$out"
done
echo "$cache"
