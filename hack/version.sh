#!/usr/bin/env bash
# Prints podwall's version: `git describe --tags --always --dirty` of the tree this script is in
# ("dev" outside a git checkout). The Makefile and the e2e image builder stamp it into every binary
# (package internal/version) and tag the images with it.
cd "$(dirname "$0")/.." && git describe --tags --always --dirty 2>/dev/null || echo dev
