//go:build tools

// Package etcd only pins the command that build.sh compiles.
package etcd

import _ "go.etcd.io/etcd/server/v3"
