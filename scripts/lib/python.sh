# The pinned Python MCP clients of the scripts that run them (scripts/clients.sh,
# scripts/cluster.sh), each in its venv under $CACHE, installed from PyPI when missing
# or when its pins changed. Both scripts ask for the same venvs with the same pins, so
# nothing is installed twice.
# Sourced; the caller defines CACHE and log.
# shellcheck shell=bash

# shellcheck disable=SC2034 # read by the scripts that source this file
PY_SDK2="mcp==2.3.0"
# shellcheck disable=SC2034
PY_FASTMCP="fastmcp==4.2.3"
# shellcheck disable=SC2034
PY_SDK1="mcp==1.30.0"

# venv NAME PACKAGE...: $CACHE/venv-NAME with exactly these packages (rebuilt when its
# marker names others); prints its python last (callers take `| tail -1`).
venv() {
    local dir="$CACHE/venv-$1"
    shift
    if [[ ! -f "$dir/.ready" ]] || [[ "$(cat "$dir/.ready")" != "$*" ]]; then
        log "installing $* into $dir"
        rm -rf "$dir"
        python3 -m venv "$dir"
        "$dir/bin/pip" install --quiet "$@"
        echo "$*" >"$dir/.ready"
    fi
    echo "$dir/bin/python"
}

# sdk2_venv: the official Python SDK 2.x's venv (fastmcp beside it, as clients.sh has it).
sdk2_venv() {
    venv sdk2 "$PY_SDK2" "$PY_FASTMCP"
}
