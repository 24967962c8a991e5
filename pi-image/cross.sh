#!/usr/bin/env bash
# Cross-compile dnsguard for aarch64-unknown-linux-gnu (Raspberry Pi 3/4/5, 64-bit OS).
#   pi-image/cross.sh [--install] build   dist-profile binary: target/aarch64-unknown-linux-gnu/dist/dnsguard
#   pi-image/cross.sh [--install] check   cargo check only
# Toolchain: DNSGUARD_CROSS=auto (default: rustup's target if it is there or can be added,
# else Debian's rustc-web/cargo-web), rustup or debian. --install: install the Debian
# cross toolchain (root). Extra arguments after the action go to cargo.
set -euo pipefail
# shellcheck source=common.sh
. "$(dirname "$0")/common.sh"

install=0
if [[ ${1:-} == --install ]]; then install=1; shift; fi
action=${1:-build}
shift || true
case $action in build | check) ;; *) die "usage: $0 [--install] build|check [cargo args]" ;; esac

if [[ $install == 1 ]]; then
    apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
fi
toolchain=$(pick_toolchain)
if [[ $toolchain == debian && ( $install == 1 || ! -x /usr/bin/cargo || ! -d /usr/lib/rustlib/$TARGET ) ]]; then
    ensure_debian_cross_toolchain
fi
cross_env "$toolchain"
log "toolchain: $toolchain ($("$CARGO" --version), $(${RUSTC:-rustc} --version))"
cd "$REPO_DIR"
# build.sh's OUT_DIR (where the image goes) is also the variable cargo sets for build
# scripts: with it inherited, a build.sh right after an up-to-date cross.sh rebuilt ring
# and everything above it (the only difference between the two; 20 min on a busy machine).
unset OUT_DIR
args=(--locked --target "$TARGET")
[[ $action == build ]] && args+=(--profile dist)
info "$CARGO $action ${args[*]} $*"
"$CARGO" "$action" "${args[@]}" "$@" || die "cargo $action for $TARGET failed (toolchain: $toolchain)"
if [[ $action == build ]]; then
    bin=${CARGO_TARGET_DIR:-$REPO_DIR/target}/$TARGET/dist/dnsguard
    [[ -x $bin ]] || die "no binary at $bin"
    info "built $bin ($(du -h "$bin" | cut -f1))"
fi
