//go:build tools

// Package podwall pins dependencies that the code is about to use, so that go mod tidy keeps them.
// Delete an import here once real code imports it.
package podwall

import (
	_ "github.com/florianl/go-nfqueue/v2"
)
