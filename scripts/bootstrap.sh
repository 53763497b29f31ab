# Sourced by scripts/demo and scripts/test: a virtual environment in .venv with juncture installed.
# Usage: bootstrap EXTRAS   (EXTRAS: "" for the tool alone, "test" for the test tools too)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

need_deb() {  # need_deb COMMAND PACKAGE: install a Debian package when a command is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing Debian package $2 (for $1)" >&2
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$2" >/dev/null
}

bootstrap() {
  local extras="${1:-}" python="${PYTHON:-python3}"
  if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "juncture needs Python 3.11 or newer as \$PYTHON or python3" >&2
    exit 2
  fi
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    "$python" -m venv "$ROOT/.venv"
  fi
  local spec="$ROOT"
  [ -n "$extras" ] && spec="$ROOT[$extras]"
  "$ROOT/.venv/bin/python" -m pip install -q --disable-pip-version-check -e "$spec" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  "$ROOT/.venv/bin/python" -c 'import juncture' || { echo "installing juncture failed" >&2; exit 2; }
  # Bytecode now, so that every run does not compile juncture again (PYTHONDONTWRITEBYTECODE may be set).
  "$ROOT/.venv/bin/python" -m compileall -q "$ROOT/src/juncture" >/dev/null
}
