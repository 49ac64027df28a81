# Runs the install steps of buildroot/package/rpi-streamer/rpi-streamer.mk as Buildroot's
# package infrastructure would, without a Buildroot tree: the .mk is included unchanged and
# its post-install hooks, init-script step, user table and permission table are expanded
# and executed here (scripts/first-boot/rootfs-buildroot drives it).
#
#   make -f buildroot-install.mk EXT=<buildroot/> SRC=<checkout> TARGET_DIR=<root> \
#        CONFIG=<.config fragment> OUT=<dir for the users and permissions tables>
#
# What Buildroot itself provides is defined here, each as Buildroot defines it
# (package/Makefile.in, package/pkg-utils.mk, package/pkg-generic.mk).

BR2_EXTERNAL_RPI_STREAMER_PATH := $(EXT)
include $(CONFIG)

INSTALL := install
SED := sed -i -e
empty :=
space := $(empty) $(empty)
comma := ,
define sep


endef
qstrip = $(strip $(subst ",,$(1)))
# The cargo build and `cargo install` are Buildroot's (the test puts the cross-built binary
# in place instead): only the package's own variables and hooks matter here.
cargo-package :=
RPI_STREAMER_PKGDIR := $(EXT)/package/rpi-streamer
include $(EXT)/package/rpi-streamer/rpi-streamer.mk

# Buildroot runs these with $(@D) = the package's build directory, a copy of the checkout
# (RPI_STREAMER_SITE_METHOD = local): here the checkout itself, read only.
# The target's directory is what $(@D) expands to; the target is never created.
.PHONY: $(SRC)/.first-boot-install
$(SRC)/.first-boot-install:
	$(foreach hook,$(RPI_STREAMER_POST_INSTALL_TARGET_HOOKS),$(call $(hook))$(sep))
	$(RPI_STREAMER_INSTALL_INIT_SYSV)
	$(file >$(OUT)/users,$(RPI_STREAMER_USERS))
	$(file >$(OUT)/permissions,$(RPI_STREAMER_PERMISSIONS))
