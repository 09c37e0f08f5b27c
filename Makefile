# baton — make run boots the demo appliance; make test runs every test. Both install what they
# need (QEMU from Debian, Debian's kernel) on a fresh machine.

SHELL      := /bin/bash
OUT        := out
GO         ?= go
GOBUILD    := CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w'
# The kernels live in out/kernel whatever OUT is (qemu-tests/fetch-kernel.sh puts them there).
KERNEL_DIR := out/kernel/amd64
VERSION    ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
HTTP_PORT    ?= 8080
CONTROL_PORT ?= 7000
STREAM_PORT  ?= 9000
# zstd: a third smaller than gzip -9 for Go binaries, and much faster to unpack; both make
# kexec's downtime shorter (purgatory hashes the initramfs, the new kernel unpacks it).
COMPRESS   ?= zstd
QEMU_ACCEL ?= $(if $(BATON_QEMU_ACCEL),$(BATON_QEMU_ACCEL),tcg)
BOOTLOADER := /usr/lib/systemd/boot/efi/systemd-bootx64.efi
VMLINUZ     = $(firstword $(wildcard $(KERNEL_DIR)/boot/vmlinuz-*))
CLOUD_VMLINUZ = $(firstword $(wildcard out/kernel/cloud-amd64/boot/vmlinuz-*))
# Your own appliance: make image CONFIG=my/baton.toml BINDIR=my/bin OUT=my/out, then
# make run CONFIG=… OUT=… FORWARDS=8080:80,7000:7000 (host port:guest port on 127.0.0.1).
CONFIG     ?= examples/baton.toml
BINDIR     ?= $(OUT)/bin
FORWARDS   ?= $(HTTP_PORT):80,$(CONTROL_PORT):7000,$(STREAM_PORT):9000
comma := ,
empty :=
HOSTFWD     = $(subst $(empty) ,,$(foreach f,$(subst $(comma), ,$(FORWARDS)),$(comma)hostfwd=tcp:127.0.0.1:$(subst :,-:,$(f))))

BINS := $(OUT)/bin/init $(OUT)/bin/baton-exec $(OUT)/bin/initctl $(OUT)/bin/web $(OUT)/bin/stream $(OUT)/bin/testsvc

.PHONY: run-uefi all run test unit fuzz qemu-test image bench bench-handoff bench-kexec bench-update bench-reexec bench-carry deps qemu kernel interop daemons vet clean
all: image

# --- dependencies a fresh machine lacks -------------------------------------------------
deps: qemu kernel interop daemons

# Debian's daemons for the own-appliance QEMU test (lighttpd, nginx), the services' host tests
# (those two and gunicorn) and curl. Their maintainer scripts would start them on this
# machine's port 80: a policy-rc.d that exits 101 forbids it (removed afterwards unless it was
# there before).
daemons:
	@{ test -x /usr/sbin/lighttpd && test -x /usr/sbin/nginx && test -x /usr/bin/gunicorn && command -v curl >/dev/null; } || { \
	  echo "installing lighttpd, nginx, gunicorn, curl (apt; not started here)"; own=; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own=1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends lighttpd nginx gunicorn curl; rc=$$?; \
	  if [ -n "$$own" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; }

# Real peers for the protocol tests: libsystemd (sd_listen_fds, sd_notify) and systemd-notify.
interop:
	@{ dpkg -s libsystemd-dev >/dev/null 2>&1 && command -v systemd-notify >/dev/null && command -v cc >/dev/null; } || { \
	  echo "installing libsystemd-dev, systemd, gcc (apt)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libsystemd-dev systemd gcc libc6-dev; }

# QEMU, UEFI firmware (OVMF) and systemd-boot for the boot disk.
qemu:
	@{ command -v qemu-system-x86_64 >/dev/null && test -f /usr/share/OVMF/OVMF_CODE_4M.fd && test -f $(BOOTLOADER); } || { \
	  echo "installing qemu-system-x86, ovmf, systemd-boot-efi (apt)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-x86 ovmf systemd-boot-efi; }

# Debian's generic kernel (the appliance's) and its cloud build (a second kernel to kexec into).
kernel:
	@qemu-tests/fetch-kernel.sh amd64 >/dev/null
	@qemu-tests/fetch-kernel.sh cloud-amd64 >/dev/null

# --- build ------------------------------------------------------------------------------
$(OUT)/bin/init: FORCE
	$(GOBUILD) -ldflags '-s -w -X main.version=$(VERSION)' -o $@ ./init
# The small exec shim between fork and a service's exec; mkimage takes the one beside init.
$(OUT)/bin/baton-exec: FORCE
	$(GOBUILD) -o $@ ./cmd/baton-exec
# initctl is the init binary under another name (argv[0]); this one runs on the host.
$(OUT)/bin/initctl: FORCE
	$(GOBUILD) -ldflags '-s -w -X main.version=$(VERSION)' -o $@ ./init
$(OUT)/bin/web: FORCE
	$(GOBUILD) -ldflags '-s -w -X main.version=$(VERSION)' -o $@ ./examples/web
$(OUT)/bin/stream: FORCE
	$(GOBUILD) -ldflags '-s -w -X main.version=$(VERSION)' -o $@ ./examples/stream
$(OUT)/bin/testsvc: FORCE
	$(GOBUILD) -o $@ ./qemu-tests/testsvc
FORCE:

# out/initramfs.img, and out/disk.img: a UEFI boot disk (GPT, FAT32 ESP labelled BOOT with
# systemd-boot, /vmlinuz, /vmlinuz-cloud, /initramfs.img) that the appliance mounts at /boot.
image: qemu kernel $(BINS)
	$(GO) run ./images/cmd/mkimage -config $(CONFIG) -init $(OUT)/bin/init \
	  -bindir $(BINDIR) -kernel-modules $(KERNEL_DIR)/lib/modules -kernel-modules out/kernel/cloud-amd64/lib/modules \
	  -carry nls_cp437,nls_utf8,nls_ascii,virtio_rng -compress $(COMPRESS) -tls-dir $(OUT)/tls -o $(OUT)/initramfs.img \
	  -disk $(OUT)/disk.img -bootloader $(BOOTLOADER) -kernel $(VMLINUZ) -disk-file /vmlinuz-cloud=$(CLOUD_VMLINUZ) \
	  -cmdline "console=ttyS0 panic=-1 quiet"

# --- run the demo -----------------------------------------------------------------------
run: qemu image
	@echo "baton demo: http://127.0.0.1:$(HTTP_PORT)/ (guest port 80)."
	@echo "Control: $(OUT)/bin/initctl --remote 127.0.0.1:$(CONTROL_PORT) --tls-dir $(OUT)/tls status"
	@echo "Stream (line counter, survives upgrades): nc 127.0.0.1 $(STREAM_PORT)"
	@echo "Quit: ctrl-a x (QEMU), or ctrl-a c then 'system_powerdown' (ACPI power button: orderly poweroff)."
	@echo "UEFI boot from the disk instead: make run-uefi"
	@echo "kexec: $(OUT)/bin/initctl --remote 127.0.0.1:$(CONTROL_PORT) --tls-dir $(OUT)/tls kexec [--kernel /boot/vmlinuz-cloud]"
	qemu-system-x86_64 -accel $(QEMU_ACCEL) -m 512 -nodefaults -no-reboot -nographic \
	  -serial mon:stdio -kernel $(VMLINUZ) \
	  -initrd $(OUT)/initramfs.img -append "console=ttyS0 panic=-1 quiet" \
	  -drive file=$(OUT)/disk.img,if=virtio,format=raw \
	  -netdev user,id=n0$(HOSTFWD) \
	  -device virtio-net-pci,netdev=n0 -device virtio-rng-pci

run-uefi: qemu image
	cp /usr/share/OVMF/OVMF_VARS_4M.fd $(OUT)/ovmf-vars.fd
	qemu-system-x86_64 -accel $(QEMU_ACCEL) -m 512 -nodefaults -nographic -serial mon:stdio -machine q35 \
	  -drive if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
	  -drive if=pflash,format=raw,file=$(OUT)/ovmf-vars.fd -drive file=$(OUT)/disk.img,if=virtio,format=raw \
	  -netdev user,id=n0$(HOSTFWD) \
	  -device virtio-net-pci,netdev=n0 -device virtio-rng-pci

# --- tests ------------------------------------------------------------------------------
# gofmt must run: with gofmt missing, $$(gofmt -l …) is empty and the check would pass.
vet:
	@command -v gofmt >/dev/null || { echo "gofmt not found (it comes with Go: is $$(go env GOROOT)/bin in PATH?)"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go')) || { echo "gofmt failed"; exit 1; }; \
	  test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...

# The supervisor core and what talks to it run under the race detector (it needs cgo: gcc
# comes with interop); the model test is part of services'.
RACE_PKGS := ./services/ ./handoff/... ./control/ ./init/
# kernel: the kexec package's tests extract and relocate Debian's two kernels.
unit: interop daemons kernel
	BATON_REQUIRE_INTEROP=1 BATON_REQUIRE_KERNEL=1 $(GO) test -count=1 $$($(GO) list ./... | grep -v '/qemu-tests$$' | grep -v -e '/services$$' -e '/handoff$$' -e '/handoff/client$$' -e '/control$$' -e '/init$$')
	BATON_REQUIRE_INTEROP=1 CGO_ENABLED=1 $(GO) test -race -count=1 $(RACE_PKGS)

# Native Go fuzzing, each target for FUZZTIME (go test runs their seeds, in testdata/fuzz and
# f.Add, as part of unit). A finding is written to the package's testdata/fuzz: commit it as a
# regression case.
FUZZTIME ?= 60s
FUZZ_TARGETS := ./config/:FuzzParse ./handoff/:FuzzParseNotify ./control/:FuzzHandler ./reexec/:FuzzDecode
fuzz:
	@for t in $(FUZZ_TARGETS); do pkg=$${t%%:*}; fn=$${t##*:}; \
	  echo "fuzz $$fn ($$pkg) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; done

qemu-test: deps
	BATON_REQUIRE_QEMU=1 $(GO) test -count=1 -v -timeout 45m ./qemu-tests/

test: vet unit qemu-test

# Benchmarks print a table and write JSON to out/bench/.
bench: bench-handoff bench-kexec bench-update bench-reexec bench-carry

# Reboot downtime under a host-side poller, one kernel, rows taking turns: the seed's own method
# (busybox + Debian's kexec-tools, kexec -l then -e; its packages are fetched with apt-get
# download into out/seedref, nothing installed), baton's fast and file kexec, SeaBIOS and OVMF
# reboots. RUNS reboots per row (default 3); ONLY=seed-kexec,kexec-fast,… picks rows.
bench-kexec: image
	$(GO) run ./qemu-tests/cmd/bench-kexec -runs $(or $(RUNS),3) $(if $(ONLY),-only $(ONLY)) -o $(OUT)/bench/kexec.json

# initctl update: in place vs kexec vs firmware reboot, under a host-side poller (OVMF boot).
bench-update: image
	$(GO) run ./qemu-tests/cmd/bench-update -runs $(or $(RUNS),3) -o $(OUT)/bench/update.json

# initctl reexec: pause and latency under load on the host, then as PID 1 under QEMU beside a
# kexec of the same appliance.
bench-reexec: image
	$(GO) run ./qemu-tests/cmd/bench-reexec -qemu -qemu-cycles $(or $(RUNS),3) -o $(OUT)/bench/reexec.json

bench-handoff: image
	$(GO) run ./qemu-tests/cmd/bench-handoff -qemu -o $(OUT)/bench/handoff.json

# keep_connections across initctl kexec (fast, same kernel) beside the same kexec without it,
# under TestQEMUKeepConnections' load: connections kept, requests failed, the longest client
# wait, downtime. RUNS kexecs per mode (default 2: each is minutes under TCG).
bench-carry: image
	$(GO) run ./qemu-tests/cmd/bench-carry -runs $(or $(RUNS),2) -o $(OUT)/bench/carry.json

clean:
	rm -rf $(OUT)
