// Command podwall-injector is podwall's mutating admission webhook: see package injector.
package main

import (
	"errors"
	"log/slog"
	"os"

	"github.com/go-logr/logr"
	ctrl "sigs.k8s.io/controller-runtime"

	"podwall.io/podwall/config"
	"podwall.io/podwall/injector"
)

func main() {
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	// controller-runtime's own packages (the webhook server, the manager) log through its global logger.
	ctrl.SetLogger(log)
	cfg, err := config.LoadInjector(os.Args[1:])
	if errors.Is(err, config.ErrHelp) || errors.Is(err, config.ErrVersion) {
		return
	}
	if err != nil {
		log.Error(err, "configuration")
		os.Exit(2)
	}
	opts, err := options(cfg)
	if err != nil {
		log.Error(err, "configuration")
		os.Exit(2)
	}
	kube, err := ctrl.GetConfig()
	if err != nil {
		log.Error(err, "kubernetes client configuration")
		os.Exit(2)
	}
	if err := injector.Run(ctrl.SetupSignalHandler(), kube, opts, log); err != nil {
		log.Error(err, "injector failed")
		os.Exit(1)
	}
}
