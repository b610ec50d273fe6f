# crt: a containerd shim v2 (containerd-shim-crt-v1, runtime io.containerd.crt.v1) with its own
# OCI runtime.
#
#   make build     release build, statically linked (musl and libseccomp):
#                  $(TARGET_DIR)/<arch>-unknown-linux-musl/release/containerd-shim-crt-v1 (what
#                  `install` installs); glibc where rustup's musl target is missing
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

# The release binary links its C library and libseccomp statically, as runc's release binaries
# do: no dynamic loader, libc.so or libseccomp.so mapped in each shim and each init helper (idle
# shim RSS 4.5 -> 3.5 MiB, nothing resolved at exec). `--target` keeps the flags off build
# scripts and proc-macros, which must stay dynamic.
HOST_TRIPLE := $(shell rustc -vV | sed -n 's/^host: //p')
# musl, not glibc: glibc's start-up asks the CPU for its features and caches with about 70
# CPUID instructions, each a trap to the hypervisor on a VM (6.5 us on this one), in every shim
# `start`, zygote and exec'd helper; musl asks none. `start` 1.8 -> 1.2 ms, the shim's calls
# 4.2 -> 3.8 ms, Pss per running shim 697 -> 568 KiB (README, Performance). RELEASE_LIBC=gnu
# builds the glibc variant (the text order below then matches little of it: more RSS); it is
# the default where rustup's musl target is not installed (`rustup target add <arch>-unknown-linux-musl`).
MUSL_TRIPLE := $(patsubst %-gnu,%-musl,$(HOST_TRIPLE))
MUSL_STD := $(wildcard $(shell rustc --print target-libdir --target $(MUSL_TRIPLE) 2>/dev/null)/libstd-*.rlib)
RELEASE_LIBC ?= $(if $(MUSL_STD),musl,gnu)
RELEASE_TRIPLE := $(if $(filter musl,$(RELEASE_LIBC)),$(MUSL_TRIPLE),$(HOST_TRIPLE))
SYSROOT := $(shell rustc --print sysroot)
# The functions a shim runs are linked first, in one run (scripts/text-order.sh says why, and
# `make text-order` regenerates the list): idle shim RSS 3.4 -> 2.1 MiB. lld does the ordering:
# rustc's own (gcc-ld), which the musl target does not pick by itself.
TEXT_ORDER := $(CURDIR)/src/text-order.txt
ORDER_FLAGS := -C link-arg=-B$(SYSROOT)/lib/rustlib/$(HOST_TRIPLE)/bin/gcc-ld -C link-arg=-fuse-ld=lld \
	-C link-arg=-Wl,--symbol-ordering-file=$(TEXT_ORDER) -C link-arg=-Wl,--no-warn-symbol-ordering
RELEASE_DIR := $(TARGET_DIR)/$(RELEASE_TRIPLE)/release
# Debian's libseccomp.a, built against glibc with _FORTIFY_SOURCE, calls glibc's checked
# __fprintf_chk (its PFC export): scripts/musl-compat.c gives musl that one symbol. The rest of
# what it calls (malloc, string functions, syscall, prctl, stdio) musl has with the same ABI.
SECCOMP_SYS_LIB := $(shell $${CC:-cc} -print-file-name=libseccomp.a)
SECCOMP_LIB_DIR := $(if $(filter musl,$(RELEASE_LIBC)),$(TARGET_DIR)/seccomp-musl,$(dir $(SECCOMP_SYS_LIB)))
# Relative relocations packed (DT_RELR): the static-pie's start-up relocation reads 3 KiB
# instead of 242 KiB of .rela.dyn (idle RSS -100 KiB).
# Segments 64 KiB-aligned (max-page-size): each segment's addresses then line up with the
# 64 KiB folios the binary's page cache holds (see `build`), and a page fault's fault-around
# window covers one folio instead of straddling two, both of which the kernel maps whole
# (idle RSS -70 KiB; the file stays the same size).
STATIC_ENV := RUSTFLAGS="$(RUSTFLAGS) -C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C link-arg=-Wl,-z,max-page-size=65536 $(ORDER_FLAGS)" LIBSECCOMP_LINK_TYPE=static \
	LIBSECCOMP_LIB_PATH=$(SECCOMP_LIB_DIR)

# the crt binary is only needed when crt is the runtime under test
E2E_DEPS := $(if $(filter io.containerd.crt.v1,$(CRT_TEST_RUNTIME)),build-debug)

.PHONY: all build build-debug install test test-unit test-e2e test-release test-v2 lint bench text-order

all: build

# The linker writes the binary through a shared mapping, a page at a time, and the page cache
# then holds it in 4 KiB folios; a copy (copy_file_range, as `install` writes it) makes 64 KiB
# ones. Each process of a shim maps its code and unmaps it at exit folio by folio: 0.5 ms more
# a container with 4 KiB ones (README, Performance). So the binary run from here is a copy.
build: $(if $(filter musl,$(RELEASE_LIBC)),$(TARGET_DIR)/seccomp-musl/libseccomp.a)
	$(STATIC_ENV) $(CARGO) build --release --target $(RELEASE_TRIPLE) --bin $(BINARY)
	cp $(RELEASE_DIR)/$(BINARY) $(RELEASE_DIR)/$(BINARY).copy
	mv -f $(RELEASE_DIR)/$(BINARY).copy $(RELEASE_DIR)/$(BINARY)

$(TARGET_DIR)/seccomp-musl/libseccomp.a: $(SECCOMP_SYS_LIB) scripts/musl-compat.c
	mkdir -p $(@D)
	$${CC:-cc} -O2 -fPIC -U_FORTIFY_SOURCE -fno-stack-protector -c scripts/musl-compat.c -o $(@D)/musl-compat.o
	cp $(SECCOMP_SYS_LIB) $@.tmp && ar rs $@.tmp $(@D)/musl-compat.o && mv $@.tmp $@

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
