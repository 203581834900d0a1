// Command workload is the e2e cluster's test workload and pause image: see package e2e/internal/workload.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"podwall.io/podwall/e2e/internal/workload"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := workload.Run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}
