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

	"podwall.io/podwall/api/policy"
	"podwall.io/podwall/config"
	"podwall.io/podwall/sidecar/agent"
)

func main() {
	// Diagnostics go to stderr; stdout carries only verdict lines.
	log := logr.FromSlogHandler(slog.NewJSONHandler(os.Stderr, nil))
	cfg, err := config.LoadSidecar(os.Args[1:])
	if errors.Is(err, config.ErrHelp) || errors.Is(err, config.ErrVersion) {
		return
	}
	if err != nil {
		log.Error(err, "configuration")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, options(cfg), log); err != nil {
		log.Error(err, "sidecar failed")
		os.Exit(1)
	}
}

// run runs the agent with opts (from cfg) and follows the workload's config file.
func run(ctx context.Context, cfg config.Sidecar, opts agent.Options, log logr.Logger) error {
	logRefusal(cfg.FileState, log)
	a, err := agent.New(opts, log)
	if err != nil {
		return err
	}
	if cfg.BaselineOnly {
		return a.InstallBaseline()
	}
	onChange := func(c config.Sidecar) {
		a.ReportConfig(reported(c))
		if c.FileState.State == policy.ConfigRefused {
			logRefusal(c.FileState, log)
			return
		}
		if err := a.Reconfigure(tunables(c.Live)); err != nil {
			log.Error(err, "configuration change refused; the previous one stays in force")
			return
		}
		log.Info("configuration reloaded", "file", string(c.FileState.State))
	}
	onError := func(err error) { log.Error(err, "configuration file") }
	if _, err := config.WatchSidecar(ctx, cfg, onChange, onError); err != nil {
		return err
	}
	return a.Run(ctx)
}

// logRefusal says on stderr that the workload's config file was refused, and why.
func logRefusal(s config.FileState, log logr.Logger) {
	if s.Refused != "" {
		log.Error(errors.New(s.Refused), "workload config file refused; the platform's settings, or the last good file's, stay in force")
	}
}
