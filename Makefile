# crt: a containerd shim v2 (containerd-shim-crt-v1, runtime io.containerd.crt.v1) with its own
# OCI runtime.
#
#   make build     release build, statically linked (glibc and libseccomp):
#                  $(TARGET_DIR)/<host triple>/release/containerd-shim-crt-v1 (what `install` installs)
#   make install   installs it as $(DESTDIR)$(PREFIX)/bin/containerd-shim-crt-v1 (PREFIX=/usr/local)
#   make test      unit tests, then the end-to-end suite against a private containerd 1.6 and 2.x;
#                  the e2e suite runs the *debug* build, $(TARGET_DIR)/debug/containerd-shim-crt-v1
#                  (faster to build, debug assertions on); needs root
#   make test-v2   the cgroup v2 subset of the e2e suite inside a QEMU VM (tests/v2vm.sh)
#   make test-release  the basic and exec e2e suites against the release build (static, ordered)
#   make lint      rustfmt check and clippy with warnings as errors
#   make text-order  regenerates src/text-order.txt, the link order of the code a shim runs
#
# Knobs: CRT_TEST_RUNTIME=io.containerd.runc.v2 runs the e2e suite against the runc shim (checks
# the harness; crt is then not built for it), E2E_THREADS (default 2) runs that many scenarios
# at once, each with its own containerd. See README.md, "Testing".

CARGO ?= cargo
PREFIX ?= /usr/local
DESTDIR ?=
BINARY := containerd-shim-crt-v1
TARGET_DIR ?= $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),$(CURDIR)/target)
E2E_THREADS ?= 2
CRT_TEST_RUNTIME ?= io.containerd.crt.v1
CRT_BIN_DIR ?= $(TARGET_DIR)/debug
export CRT_TEST_RUNTIME CRT_BIN_DIR

# The release binary links glibc and libseccomp statically, as runc's release binaries do: no
# dynamic loader, libc.so or libseccomp.so mapped in each shim and each init helper (idle shim
# RSS 4.5 -> 3.5 MiB, nothing resolved at exec). `--target` keeps the flags off build scripts
# and proc-macros, which must stay dynamic.
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
# The functions a shim runs are linked first, in one run (scripts/text-order.sh says why, and
# `make text-order` regenerates the list): idle shim RSS 3.4 -> 2.1 MiB.
TEXT_ORDER := $(CURDIR)/src/text-order.txt
ORDER_FLAGS := -C link-arg=-Wl,--symbol-ordering-file=$(TEXT_ORDER) -C link-arg=-Wl,--no-warn-symbol-ordering
RELEASE_DIR := $(TARGET_DIR)/$(HOST_TRIPLE)/release
# Relative relocations packed (DT_RELR): the static-pie's start-up relocation reads 3 KiB
# instead of 242 KiB of .rela.dyn (idle RSS -100 KiB).
STATIC_ENV := RUSTFLAGS="$(RUSTFLAGS) -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs $(ORDER_FLAGS)" LIBSECCOMP_LINK_TYPE=static \
	LIBSECCOMP_LIB_PATH=$(dir $(shell $${CC:-cc} -print-file-name=libseccomp.a))

# the crt binary is only needed when crt is the runtime under test
E2E_DEPS := $(if $(filter io.containerd.crt.v1,$(CRT_TEST_RUNTIME)),build-debug)

.PHONY: all build build-debug install test test-unit test-e2e test-release test-v2 lint bench text-order

all: build

build:
	$(STATIC_ENV) $(CARGO) build --release --target $(HOST_TRIPLE) --bin $(BINARY)

build-debug:
	$(CARGO) build --bin $(BINARY)

install: build
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(RELEASE_DIR)/$(BINARY) $(DESTDIR)$(PREFIX)/bin/$(BINARY)

test: test-unit test-e2e

test-unit:
	$(CARGO) test --workspace --exclude crt-e2e

test-e2e: $(E2E_DEPS)
	$(CARGO) test -p crt-e2e -- --test-threads=$(E2E_THREADS)

# What `make install` installs is linked differently (static, DT_RELR, text order): run it too.
test-release: build
	CRT_BIN_DIR=$(RELEASE_DIR) $(CARGO) test -p crt-e2e --test basic --test exec -- --test-threads=$(E2E_THREADS)

test-v2:
	bash tests/v2vm.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# crt against containerd-shim-runc-v2 with runc and with crun, on one private containerd
# (tests/src/bin/bench.rs); needs root. BENCH_RUNS, BENCH_PODS, BENCH_CONTAINERD=1.6|2.
bench: build
	CRT_BIN_DIR=$(RELEASE_DIR) $(CARGO) run --release -p crt-e2e --bin bench

# Regenerate src/text-order.txt from a traced run of the current release build; needs root.
text-order: build
	bash scripts/text-order.sh $(RELEASE_DIR)/$(BINARY)
