# podwall — `make help` lists the targets.
SHELL := /bin/bash
GO ?= go
BIN := bin
# Control-plane binaries for envtest-style tests, built from the Go module proxy and cached outside the repo.
KUBE_ASSETS = $(shell hack/build-kube.sh | tail -n 1)
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
# podwall's version (git describe --tags --always --dirty; "dev" without git), stamped into every
# binary (package internal/version) and every image tag; `make VERSION=v1.2.3 ...` overrides it.
VERSION ?= $(shell hack/version.sh)
LDFLAGS := -X podwall.io/podwall/internal/version.Version=$(VERSION)

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

.PHONY: build
build: ui-assets ## build podwall's binaries into bin/, stamped with VERSION (each must print it for --version)
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...
	install -m 0755 cmd/kubectl-podwall/kubectl_complete-podwall $(BIN)/
	@for b in $(patsubst cmd/%/main.go,%,$(wildcard cmd/*/main.go)); do \
	  $(BIN)/$$b --version | grep -qF ' $(VERSION) ' || { echo "$$b --version does not say $(VERSION)"; exit 1; }; done

.PHONY: version
version: ## print the version the builds stamp (hack/version.sh)
	@echo $(VERSION)

.PHONY: release-manifests
release-manifests: ## pin manifests/ to podwall/*:VERSION (the kustomize images: entry in manifests/version/; the injector injects its own version of the sidecar)
	sed -i -E 's/^(  newTag: ).*/\1"$(VERSION)"/' manifests/version/kustomization.yaml
	@grep -c 'newTag: "$(VERSION)"' manifests/version/kustomization.yaml | grep -qx 2 || \
	  { echo "manifests/version/kustomization.yaml: want its two newTag lines at $(VERSION)"; exit 1; }

.PHONY: kube-bin
kube-bin: ## build (once) and cache kube-apiserver and etcd for the tests; prints their folder
	@hack/build-kube.sh

.PHONY: cluster-bin
cluster-bin: ## build (once) and cache every binary of the local e2e cluster (adds kubelet, controller-manager, scheduler, kube-proxy, kubectl, CoreDNS)
	@hack/build-kube.sh kube-apiserver etcd node

.PHONY: test
test: lint ui-assets ## run every test: unit, root network-namespace datapath tests, real kube-apiserver tests
	KUBEBUILDER_ASSETS=$(KUBE_ASSETS) $(GO) test -count=1 ./...

.PHONY: test-ui
test-ui: ui-assets ## the web UI in headless Chromium against policygen on a real API server; screenshots in policygen/ui/testdata/artifacts/ (or PODWALL_UI_ARTIFACTS)
	KUBEBUILDER_ASSETS=$(KUBE_ASSETS) $(GO) test -count=1 -v -run '^TestUI$$' ./policygen/ui/

UI_WEB := policygen/ui/web
UI_VENDOR := policygen/ui/assets/vendor/cytoscape.min.js

.PHONY: ui-assets
ui-assets: $(UI_VENDOR) ## the web UI's third-party JavaScript: npm ci from policygen/ui/web's lockfile, bundled into policygen/ui/assets/vendor/ with its licenses

$(UI_VENDOR): $(UI_WEB)/package.json $(UI_WEB)/package-lock.json $(UI_WEB)/entry.js $(UI_WEB)/build.mjs
	cd $(UI_WEB) && npm ci --no-audit --no-fund --loglevel=error && node build.mjs

.PHONY: bench-ui
bench-ui: ui-assets ## (~1 min) the web UI in headless Chromium with 30 workloads: bundled JS (KiB) and the service map's time to first render
	KUBEBUILDER_ASSETS=$(KUBE_ASSETS) $(GO) test -tags bench -count=1 -timeout 10m -run '^TestBenchUI$$' -v ./policygen/ui/

.PHONY: ui-screenshots
ui-screenshots: ui-assets ## the README's pictures of each UI page, light and dark: runs test-ui's browser test, copies its ui-*.png into docs/images/
	@dir=$$(mktemp -d); trap 'rm -rf $$dir' EXIT; \
	  PODWALL_UI_ARTIFACTS=$$dir KUBEBUILDER_ASSETS=$(KUBE_ASSETS) $(GO) test -count=1 -run '^TestUI$$/^browser$$' ./policygen/ui/ && \
	  mkdir -p docs/images && cp $$dir/ui-*.png docs/images/ && ls docs/images/ui-*.png

E2E_PKGS := containerd runc containernetworking-plugins iptables conntrack nftables iproute2

.PHONY: e2e-deps
e2e-deps: ## install the Debian packages the local cluster needs (containerd, runc, CNI plugins...), if missing
	@missing=$$(for p in $(E2E_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

.PHONY: e2e
e2e: e2e-deps cluster-bin ui-assets ## end-to-end tests on a real local cluster (root): prints E2E passed=<n> failed=<n>
	@set -o pipefail; log=$$(mktemp); \
	  $(GO) test -tags e2e -count=1 -timeout 40m -v ./e2e/ 2>&1 | tee $$log; rc=$$?; \
	  echo "E2E passed=$$(grep -c '^--- PASS' $$log) failed=$$(grep -c '^--- FAIL' $$log) skipped=$$(grep -c '^--- SKIP' $$log)"; \
	  rm -f $$log; exit $$rc

.PHONY: cluster
cluster: e2e-deps cluster-bin ## the bare local single-node cluster, by hand (root); prints KUBECONFIG, Ctrl-C tears it down
	$(GO) run ./e2e/cmd/cluster

.PHONY: lint
lint: $(STATICCHECK) ui-assets ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files -o --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

.PHONY: fuzz
fuzz: ## run each fuzz target for FUZZTIME (default 20s)
	@for spec in $$(grep -rlE '^func Fuzz' --include='*_test.go' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -hoE '^func Fuzz[A-Za-z0-9_]+' $$spec/*_test.go | cut -d' ' -f2); do \
	    echo "fuzz $$spec $$f"; $(GO) test $$spec -run '^$$' -fuzz "^$$f$$" -fuzztime $${FUZZTIME:-20s} || exit 1; \
	  done; done

.PHONY: bench
bench: ## run every bench-* target; each prints BENCH <name> value= unit= baseline= ratio= lines
	@for t in $$(grep -hoE '^bench-[a-zA-Z0-9_-]+:' $(MAKEFILE_LIST) | tr -d : | sort -u); do \
	  $(MAKE) --no-print-directory $$t || exit 1; done

.PHONY: bench-datapath
# The sidecar is built as its image carries it (e2e/internal/images): static, CGO_ENABLED=0, no libc.
bench-datapath: ## (root, ~2 min) sidecar datapath figures vs the same netns with no firewall; see BENCHMARKS.md
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/podwall-sidecar
	PODWALL_SIDECAR=$(abspath $(BIN))/podwall-sidecar \
	  $(GO) test -tags bench -count=1 -timeout 10m -run '^(TestDatapath|TestDNS|TestVerdictFlood)$$' -v ./bench/datapath/

.PHONY: bench-peers
bench-peers: e2e-deps cluster-bin ## (root, ~10 min, starts the local cluster: run under flock /tmp/podwall-e2e.lock) podwall beside kube-network-policies v0.8.0 and a static nftables ruleset; see BENCHMARKS.md
	$(GO) test -tags bench -count=1 -timeout 60m -run '^TestPeers$$' -v ./bench/peers/

.PHONY: bench-injector
bench-injector: ## (~2 min) 500 pod creates per round at concurrency 8 through podwall's webhook, a floor webhook and none: the webhook's p99 and create rate against the floor's
	KUBEBUILDER_ASSETS=$(KUBE_ASSETS) $(GO) test -tags bench -count=1 -timeout 10m -run '^TestBenchInjector$$' -v ./injector/

CONTROLLER_GEN := $(GO) run sigs.k8s.io/controller-tools/cmd/controller-gen@v0.23.0

.PHONY: generate
generate: ## regenerate deepcopy code and CRD YAML (manifests/crds/) from api/v1alpha1
	$(CONTROLLER_GEN) object paths=./api/v1alpha1/...
	$(CONTROLLER_GEN) crd paths=./api/v1alpha1/... output:crd:artifacts:config=manifests/crds

.PHONY: run
run: e2e-deps cluster-bin ui-assets ## podwall on a local single-node cluster built here, with a demo workload (root); Ctrl-C removes it all
	$(GO) run ./e2e/cmd/cluster -podwall -demo

.PHONY: run-netns
run-netns: ## the sidecar alone, no cluster: a demo pod namespace guarded under a built-in policy (root)
	hack/demo.sh

KUBECTL ?= kubectl

.PHONY: deploy
deploy: ## install podwall into the current kubeconfig's cluster (kubectl apply -k manifests/; images podwall/*:<the pinned version>)
	$(KUBECTL) apply -k manifests/

.PHONY: bench-policygen
bench-policygen: ## (~5 min) real policygen, 2,000 pods in 200 workloads, 500 subscribers: IP-change propagation p99 and RSS vs the issue's targets
	KUBEBUILDER_ASSETS=$(KUBE_ASSETS) $(GO) test -tags bench -count=1 -timeout 30m -run '^TestBenchPolicygen$$' -v ./policygen/bench/
