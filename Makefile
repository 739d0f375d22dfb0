# Rust CNI plugins — common tasks. `make help` lists them.

PREFIX  ?= /opt/cni/bin
DESTDIR ?=
CARGO   ?= cargo
PLUGINS := bridge host-local loopback portmap static sbr host-device tuning firewall macvlan ipvlan vlan bandwidth dhcp
TOOLS   := cnictl
# Release binaries: static musl executables (see README, "Static linking").
# RELEASE_TARGET=<host triple> builds dynamically linked ones instead.
RELEASE_TARGET ?= x86_64-unknown-linux-musl
RELEASE_DIR    := target/$(RELEASE_TARGET)/release

.PHONY: help build test test-unit demo install install-config lint fmt clean need-root

help:
	@echo "make build           release build of the plugins and cnictl"
	@echo "make test            all tests (needs root: network namespaces)"
	@echo "make demo            the main job: the bundled conflist on throwaway namespaces (needs root)"
	@echo "make install         install into \$$DESTDIR\$$PREFIX (default /opt/cni/bin)"
	@echo "make install-config  the default conflist into /etc/cni/net.d (never overwrites)"
	@echo "make lint            cargo fmt --check and clippy -D warnings"
	@echo "make deb             .deb package (cargo-deb; installed if missing)"
	@echo "make rpm             .rpm package (cargo-generate-rpm; installed if missing)"
	@echo "make bench           benchmarks against the Go reference plugins (needs root)"
	@echo "make test-stress     heavier reliability runs (needs root)"
	@echo "make fuzz-smoke      a short run of every fuzz target (nightly + cargo-fuzz)"

need-root:
	@if [ "$$(id -u)" != 0 ]; then \
		echo "error: this target needs root (it creates network namespaces, links and netfilter rules)." >&2; \
		echo "       run it as: sudo make $(MAKECMDGOALS)" >&2; \
		exit 1; \
	fi

build:
	@scripts/ensure-rust-target $(RELEASE_TARGET)
	$(CARGO) build --release --workspace --bins --target $(RELEASE_TARGET)

# Integration tests exec the debug binaries, so build them first.
test: need-root
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace

test-unit:
	$(CARGO) test --workspace --lib --bins

demo: need-root build
	./$(RELEASE_DIR)/cni-demo --cni-path $(RELEASE_DIR)

install: build
	install -d "$(DESTDIR)$(PREFIX)"
	for b in $(PLUGINS) $(TOOLS); do \
		install -m 0755 "$(RELEASE_DIR)/$$b" "$(DESTDIR)$(PREFIX)/$$b"; \
	done

install-config:
	install -d "$(DESTDIR)/etc/cni/net.d"
	for f in conf/*.conflist; do \
		dst="$(DESTDIR)/etc/cni/net.d/$$(basename $$f)"; \
		if [ -e "$$dst" ]; then echo "keeping existing $$dst"; \
		else install -m 0644 "$$f" "$$dst" && echo "installed $$dst"; fi; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# Benchmarks and the reliability suite (issue 8). `make bench` writes
# docs/bench/{results.json,RESULTS.md,latency.png}; needs strace and, for the
# chart, python3 with matplotlib.
.PHONY: bench test-stress fuzz-smoke
bench: need-root build
	./$(RELEASE_DIR)/cni-bench --ours $(RELEASE_DIR) --out docs/bench
	python3 scripts/bench-chart.py docs/bench/results.json docs/bench/latency.png

test-stress: need-root
	$(CARGO) build --workspace --bins
	CNI_STRESS=1 $(CARGO) test -p integration --test reliability --test security -- --nocapture

FUZZ_SECONDS ?= 25
fuzz-smoke:
	cd fuzz && fail=; for t in $$($(CARGO) +nightly fuzz list); do \
		$(CARGO) +nightly fuzz run $$t -- -max_total_time=$(FUZZ_SECONDS) || fail="$$fail $$t"; \
	done; if [ -n "$$fail" ]; then echo "fuzz targets that failed:$$fail (see fuzz/artifacts/)" >&2; exit 1; fi

# Packages: cargo-deb and cargo-generate-rpm read packaging/Cargo.toml.
# Both tools are installed with `cargo install --locked` when missing.
.PHONY: deb rpm
deb: build
	@$(CARGO) deb --version >/dev/null 2>&1 || { \
		echo "cargo-deb not found: installing it (cargo install --locked cargo-deb)"; \
		$(CARGO) install --locked cargo-deb; }
	$(CARGO) deb -p cni-plugins --no-build --target $(RELEASE_TARGET)
	@ls target/$(RELEASE_TARGET)/debian/*.deb 2>/dev/null || ls target/debian/*.deb

rpm: build
	@$(CARGO) generate-rpm --version >/dev/null 2>&1 || { \
		echo "cargo-generate-rpm not found: installing it (cargo install --locked cargo-generate-rpm)"; \
		$(CARGO) install --locked cargo-generate-rpm; }
	$(CARGO) generate-rpm -p packaging --target $(RELEASE_TARGET)
	@ls target/$(RELEASE_TARGET)/generate-rpm/*.rpm 2>/dev/null || ls target/generate-rpm/*.rpm
