//go:build tools

// Package knp only pins the command that hack/build-knp.sh compiles: kube-network-policies, the
// NetworkPolicy agent that make bench-peers measures podwall beside.
package knp

import _ "sigs.k8s.io/kube-network-policies/cmd"
