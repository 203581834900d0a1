// Command podwall-sidecar is the per-pod firewall: see package sidecar/agent.
package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-logr/logr"

	"podwall.io/podwall/config"
	"podwall.io/podwall/sidecar/agent"
)

func main() {
	// Diagnostics go to stderr; stdout carries only verdict lines.
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.LoadSidecar(os.Args[1:])
	if errors.Is(err, config.ErrHelp) {
		return
	}
	if err != nil {
		log.Error(err, "configuration")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error(err, "sidecar failed")
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config.Sidecar, log logr.Logger) error {
	a, err := agent.New(options(cfg), log)
	if err != nil {
		return err
	}
	if cfg.BaselineOnly {
		return a.InstallBaseline()
	}
	onChange := func(c config.Sidecar) {
		if err := a.Reconfigure(tunables(c.Live)); err != nil {
			log.Error(err, "configuration change refused; the previous one stays in force")
			return
		}
		log.Info("configuration reloaded")
	}
	onError := func(err error) { log.Error(err, "configuration file") }
	if _, err := config.WatchSidecar(ctx, os.Args[1:], cfg, onChange, onError); err != nil {
		return err
	}
	return a.Run(ctx)
}
