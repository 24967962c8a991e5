# shellcheck shell=bash
# Shared helpers for pi-image/*.sh and .ci/aarch64-check (sourced, not run).

PI_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
REPO_DIR=$(cd "$PI_DIR/.." && pwd)
TARGET=aarch64-unknown-linux-gnu

log() { printf '\n== %s\n' "$*" >&2; }
info() { printf '   %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "$1 needs root (debootstrap, chroot, device nodes): run it with sudo"
}

# apt_install PKG...: install the Debian packages that are missing (apt-get update first).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    [[ $(id -u) -eq 0 ]] || die "missing Debian packages: ${missing[*]} (install them as root)"
    info "installing: ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed"
}

# Debian's rustc-web / cargo-web live in bookworm-security; the arm64 std needs the arm64 architecture.
ensure_debian_cross_toolchain() {
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        info "dpkg --add-architecture arm64"
        dpkg --add-architecture arm64
    fi
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    if [[ $codename == bookworm ]] && ! grep -rqs 'bookworm-security' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        info "adding the bookworm-security suite (rustc-web, cargo-web)"
        cat >/etc/apt/sources.list.d/dnsguard-bookworm-security.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    apt_install rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu libc6-dev-arm64-cross
    [[ -d /usr/lib/rustlib/$TARGET ]] || die "libstd-rust-web-dev:arm64 installed but /usr/lib/rustlib/$TARGET is missing"
}

# cross_env TOOLCHAIN: set CARGO, PATH and the linker/C compiler variables for $TARGET.
# TOOLCHAIN is "rustup" or "debian". Exports CARGO (the cargo to run).
cross_env() {
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
    case $1 in
        debian)
            # rustup's ~/.cargo/bin would shadow Debian's rustc, and Debian's arm64 std
            # only works with Debian's rustc of the same version: /usr/bin first, for this build only.
            export PATH="/usr/bin:/bin:/usr/sbin:/sbin"
            export RUSTC=/usr/bin/rustc CARGO=/usr/bin/cargo
            unset RUSTUP_TOOLCHAIN
            ;;
        rustup) CARGO=$(command -v cargo); export CARGO ;;
        *) die "unknown toolchain '$1' (rustup or debian)" ;;
    esac
    command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc not found (apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
}

# pick_toolchain: print "rustup" or "debian". DNSGUARD_CROSS=rustup|debian forces one.
# auto: rustup when its aarch64 target is installed or `rustup target add` works (a laptop
# with internet); else Debian's rustc-web/cargo-web + libstd-rust-web-dev:arm64 (offline).
pick_toolchain() {
    local want=${DNSGUARD_CROSS:-auto}
    case $want in
        rustup | debian) echo "$want"; return ;;
        auto) ;;
        *) die "DNSGUARD_CROSS must be auto, rustup or debian (got '$want')" ;;
    esac
    if command -v rustup >/dev/null; then
        if rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
            echo rustup; return
        fi
        info "trying: rustup target add $TARGET (60 s at most)"
        if timeout 60 rustup target add "$TARGET" >&2; then
            echo rustup; return
        fi
        info "rustup cannot add $TARGET here; using Debian's toolchain"
    fi
    echo debian
}

# ensure_binfmt: arm64 binaries must run through qemu-user-static (debootstrap's second stage, chroot).
ensure_binfmt() {
    apt_install qemu-user-static binfmt-support
    local bm=/proc/sys/fs/binfmt_misc
    [[ -e $bm/status ]] || mount -t binfmt_misc binfmt_misc "$bm" || die "cannot mount binfmt_misc"
    if [[ ! -e $bm/qemu-aarch64 ]]; then
        if [[ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]]; then
            cat /usr/lib/binfmt.d/qemu-aarch64.conf >"$bm/register" || die "cannot register qemu-aarch64 in binfmt_misc"
        else
            update-binfmts --enable qemu-aarch64 || die "update-binfmts --enable qemu-aarch64 failed"
        fi
    fi
    grep -q '^flags: .*F' "$bm/qemu-aarch64" || die "binfmt qemu-aarch64 lacks the F flag (needed inside a chroot)"
    grep -qx enabled "$bm/qemu-aarch64" || echo 1 >"$bm/qemu-aarch64"
}
