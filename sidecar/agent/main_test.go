package agent

import (
	"os"
	"testing"

	"podwall.io/podwall/sidecar/ruleset/marktest"
)

// TestMain: started as marktest's attacker, the test binary attacks instead.
func TestMain(m *testing.M) {
	marktest.Main()
	os.Exit(m.Run())
}
