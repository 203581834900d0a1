package plugin

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"podwall.io/podwall/internal/testutil"
)

// TestServeWarnsOffLoopback: the proxy adds the user's token to every request, so one listening
// where others can reach it says so; on loopback it does not.
func TestServeWarnsOffLoopback(t *testing.T) {
	for _, tt := range []struct {
		address string
		warns   bool
	}{{"127.0.0.1", false}, {"localhost", false}, {"0.0.0.0", true}} {
		t.Run(tt.address, func(t *testing.T) {
			var out, errOut testutil.Buffer
			o := uiOptions{address: tt.address, streams: genericiooptions.IOStreams{Out: &out, ErrOut: &errOut}}
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() {
				served <- o.serve(ctx, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
			}()
			testutil.Await(t, "the URL", 10*time.Second, func() error {
				if !strings.Contains(out.String(), "podwall UI: http://") {
					return errors.New("no URL printed yet")
				}
				return nil
			})
			cancel()
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			if warned := strings.Contains(errOut.String(), "anyone who can reach it acts as you"); warned != tt.warns {
				t.Errorf("--address %s: warned %v, want %v (stderr %q)", tt.address, warned, tt.warns, errOut.String())
			}
		})
	}
}
