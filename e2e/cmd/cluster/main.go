// Command cluster brings up the local single-node e2e cluster by hand (`make cluster`), prints how to
// reach it, and tears it down, host state included, on Ctrl-C. Run it from the repository's root.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"podwall.io/podwall/e2e/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := os.Getwd()
	if err != nil {
		fail(err)
	}
	c, missing, err := stack.Up(ctx, root)
	if err != nil {
		fail(err)
	}
	for ref, err := range missing {
		fmt.Fprintf(os.Stderr, "image %s left out: %v\n", ref, err)
	}
	fmt.Printf(`local cluster up (node %s at %s); component logs in %s/logs
  export KUBECONFIG=%s
  kubectl get pods -A
images: %s and podwall's own (imagePullPolicy: IfNotPresent)
Ctrl-C tears it down.
`, c.HostIP, c.APIServerURL, c.Dir(), c.Kubeconfig, stack.WorkloadImage)
	<-ctx.Done()
	fmt.Println("tearing down")
	if err := c.Stop(); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cluster:", err)
	os.Exit(1)
}
