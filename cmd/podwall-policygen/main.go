// Command podwall-policygen is podwall's cluster service (see package policygen). With the arguments
// "export namespace/name" it instead prints that WorkloadPolicy as a NetworkPolicy (see package
// policygen/export), using the kubeconfig kubectl would.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"podwall.io/podwall/config"
	"podwall.io/podwall/policygen"
	"podwall.io/podwall/policygen/export"
)

func main() {
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	ctrl.SetLogger(log)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "export" {
		if err := export.Command(ctx, os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "export:", err)
			os.Exit(1)
		}
		return
	}
	cfg, err := config.LoadPolicyGenServer(os.Args[1:])
	if errors.Is(err, config.ErrHelp) || errors.Is(err, config.ErrVersion) {
		return
	}
	if err != nil {
		log.Error(err, "configuration")
		os.Exit(2)
	}
	kube, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "kubernetes client configuration")
		os.Exit(2)
	}
	if err := policygen.Run(ctx, kube, options(cfg), log); err != nil {
		log.Error(err, "policygen failed")
		os.Exit(1)
	}
}
