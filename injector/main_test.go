package injector

import (
	"os"
	"testing"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// TestMain quiets controller-runtime's global logger; each injector under test logs through testr.
// Run with attackEnv set, the binary is TestInjectedAppCannotBypassWithNetRaw's attacker instead.
func TestMain(m *testing.M) {
	if spec := os.Getenv(attackEnv); spec != "" {
		os.Exit(runAttack(spec))
	}
	ctrllog.SetLogger(logr.Discard())
	os.Exit(m.Run())
}
