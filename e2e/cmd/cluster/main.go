// Command cluster runs the local single-node cluster by hand: `make cluster` (the bare cluster) and
// `make run` (-podwall -demo: podwall deployed and a demo workload). It prints how to reach it and
// tears it down, host state included, on Ctrl-C. Run it from the repository's root, as root.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"podwall.io/podwall/e2e/internal/stack"
)

func main() {
	podwall := flag.Bool("podwall", false, "deploy podwall (kubectl apply -k manifests/)")
	demo := flag.Bool("demo", false, "with -podwall: deploy the demo workload in namespace demo")
	flag.Parse()
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
	if err := stack.Setup(ctx, c, root, *podwall, *demo); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		stop()
	} else {
		fmt.Print(stack.Usage(ctx, c, *podwall, *demo))
	}
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
