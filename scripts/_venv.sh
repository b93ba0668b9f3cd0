# Sourced by the scripts: make .venv exist and hold what pyproject.toml asks for.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
if [ ! -x "$root/.venv/bin/python" ]; then
  echo "setting up $root/.venv" >&2
  "$python" -m venv "$root/.venv"
  "$root/.venv/bin/python" -m pip install --quiet --upgrade pip
fi
extras=${SOCMETH_EXTRAS:-}
stamp="$root/.venv/.socmeth-installed${extras:+-$extras}"
want=$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing socmeth${extras:+ with [$extras]} into .venv" >&2
  "$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e "$root${extras:+[$extras]}"
  echo "$want" > "$stamp"
fi
export PATH="$root/.venv/bin:$PATH"
