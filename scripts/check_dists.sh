#!/usr/bin/env bash
# Build both wheels into dist/ and install each into a clean virtual environment, as a user
# would, from a folder outside the checkout:
#
#   sagawire      pip install dist/sagawire-*.whl; `sagawire --version`;
#                 `sagawire demo --sagas 100 --json` exits 0 (the demo's machines ship in it)
#   sagawire-sdk  pip install dist/sagawire_sdk-*.whl; `import participants_sdk` works and none
#                 of the daemon's dependencies is installed; with the `mongodb` extra,
#                 `participants_sdk.mongo_dedupe` imports too
#
# Usage: scripts/check_dists.sh [BUILD_PYTHON]   (default .venv/bin/python; needs pip)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build_python=${1:-.venv/bin/python}
base_python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work" "$repo/build" "$repo/participants_sdk/build"' EXIT

rm -rf dist build participants_sdk/build
"$build_python" -m pip wheel --no-deps --quiet --wheel-dir dist . ./participants_sdk
ls dist

step() { printf '\n== %s\n' "$*"; }

step "sagawire: the wheel in a clean environment"
"$base_python" -m venv "$work/sagawire"
"$work/sagawire/bin/pip" install --quiet "$repo"/dist/sagawire-*.whl
(cd "$work" && "$work/sagawire/bin/python" - <<'PY'
import importlib.resources

page = importlib.resources.files("orchestrator.gateway") / "monitor" / "index.html"
if not page.is_file():
    raise SystemExit("the wheel lacks the flow monitor's page (orchestrator/gateway/monitor/)")
print("flow monitor page:", page)
PY
)
version=$(cd "$work" && "$work/sagawire/bin/sagawire" --version)
echo "$version"
expected=$("$build_python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
[[ "$version" == "sagawire $expected" ]] || { echo "expected sagawire $expected" >&2; exit 1; }
(cd "$work" && "$work/sagawire/bin/sagawire" demo --sagas 100 --json > demo.json)
cat "$work/demo.json"

step "sagawire-sdk: the wheel in a clean environment, without the daemon's dependencies"
"$base_python" -m venv "$work/sdk"
"$work/sdk/bin/pip" install --quiet "$repo"/dist/sagawire_sdk-*.whl
(cd "$work" && "$work/sdk/bin/python" - <<'PY'
import importlib.util

import participants_sdk
from participants_sdk import Participant, RabbitBroker, SagaClient  # noqa: F401

daemon_only = ["orchestrator", "pymongo", "typer", "rich", "prometheus_client", "yaml", "pydantic_settings"]
present = [name for name in daemon_only if importlib.util.find_spec(name) is not None]
if present:
    raise SystemExit(f"sagawire-sdk pulled in {present}")
print(f"participants_sdk from {participants_sdk.__file__}; none of {', '.join(daemon_only)}")
PY
)
"$work/sdk/bin/pip" install --quiet "$(ls "$repo"/dist/sagawire_sdk-*.whl)[mongodb]"
(cd "$work" && "$work/sdk/bin/python" -c \
    "from participants_sdk.mongo_dedupe import MongoDedupeStore; print('with [mongodb]:', MongoDedupeStore.__name__)")
step "both distributions install and run"
