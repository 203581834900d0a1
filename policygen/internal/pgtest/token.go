package pgtest

import (
	"os"
	"path/filepath"
	"testing"
)

// TokenFile writes token to a file of its own and returns the path, for a policy client that reads
// its token the way the sidecar reads its projected one.
func TokenFile(t testing.TB, token string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
