#!/usr/bin/env bash
# Local RabbitMQ and MongoDB-protocol (FerretDB) servers for the tests, without Docker.
#
#   scripts/services.sh start    install what is missing, start both, wait, print the URLs
#   scripts/services.sh stop     stop what `start` started (by pid), nothing else
#   scripts/services.sh status   say what runs
#   scripts/services.sh env      print the URLs as shell assignments
#   scripts/services.sh stop-rabbitmq | start-rabbitmq | stop-mongo | start-mongo
#                                one server at a time (fault-injection tests use these)
#
# RabbitMQ comes from Debian's packages; FerretDB (SQLite backend) is built from the Go module
# proxy at a pinned version, with the patches of scripts/ferretdb/ applied (see each file for
# what it fixes and why). Both keep their state under .services/ in the checkout. When
# SAGAWIRE_TEST_AMQP_URL and SAGAWIRE_TEST_MONGODB_URL are set, nothing is started: the tests
# use those servers.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATE="${SAGAWIRE_SERVICES_DIR:-$ROOT/.services}"
AMQP_PORT="${SAGAWIRE_SERVICES_AMQP_PORT:-5672}"
MONGO_PORT="${SAGAWIRE_SERVICES_MONGO_PORT:-27017}"
FERRETDB_VERSION="v1.24.0"
FERRETDB_MODULE="github.com/FerretDB/FerretDB"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/sagawire"
FERRETDB_PATCHES=("$ROOT"/scripts/ferretdb/"$FERRETDB_VERSION"-*.patch)
# The binary's name carries a digest of the patches: a changed patch means a new build.
FERRETDB_BUILD="$FERRETDB_VERSION-$(cat "${FERRETDB_PATCHES[@]}" | sha256sum | cut -c1-12)"
FERRETDB_BIN="$CACHE/ferretdb-$FERRETDB_BUILD/ferretdb"
ENV_FILE="$STATE/env"

say() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $* (or set SAGAWIRE_TEST_AMQP_URL / SAGAWIRE_TEST_MONGODB_URL)"
  fi
}

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {  # port, seconds, what
  local deadline=$((SECONDS + $2))
  until port_open "$1"; do
    [ "$SECONDS" -lt "$deadline" ] || die "$3 did not open port $1 within $2 s; see $STATE"
    sleep 0.2
  done
}

# -- RabbitMQ ---------------------------------------------------------------------------------

RABBIT_DIR="$STATE/rabbitmq"
RABBIT_PID="$RABBIT_DIR/rabbit.pid"
rabbit_env() {
  export HOME="$RABBIT_DIR" RABBITMQ_NODENAME="sagawire-$AMQP_PORT@localhost"
  export RABBITMQ_NODE_PORT="$AMQP_PORT" RABBITMQ_DIST_PORT=$((AMQP_PORT + 20001))
  export RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log"
  export RABBITMQ_PID_FILE="$RABBIT_PID" RABBITMQ_ENABLED_PLUGINS_FILE="$RABBIT_DIR/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$RABBIT_DIR/rabbitmq"
}
RABBIT_BIN=/usr/lib/rabbitmq/bin

start_rabbitmq() {
  if alive "$RABBIT_PID"; then say "RabbitMQ already running (pid $(cat "$RABBIT_PID"))"; return; fi
  if [ ! -x "$RABBIT_BIN/rabbitmq-server" ]; then
    say "installing RabbitMQ from Debian's packages"
    as_root apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  # The Debian package may start a system node; this one is the project's own.
  port_open "$AMQP_PORT" && die "port $AMQP_PORT is taken by another server; stop it, or set SAGAWIRE_SERVICES_AMQP_PORT, or SAGAWIRE_TEST_AMQP_URL to use it"
  mkdir -p "$RABBIT_DIR"
  (
    rabbit_env
    pgrep -x epmd >/dev/null || touch "$RABBIT_DIR/started-epmd"
    echo "[]." >"$RABBITMQ_ENABLED_PLUGINS_FILE"
    printf '# the project-local test node: defaults are what Sagawire expects\n' \
      >"$RABBIT_DIR/rabbitmq.conf"
    "$RABBIT_BIN/rabbitmq-server" -detached
    "$RABBIT_BIN/rabbitmqctl" wait --timeout 90 "$RABBIT_PID" >/dev/null
  ) || die "RabbitMQ failed to start; see $RABBIT_DIR/log"
  wait_port "$AMQP_PORT" 30 RabbitMQ
  say "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) on port $AMQP_PORT (pid $(cat "$RABBIT_PID"))"
}

stop_rabbitmq() {
  if alive "$RABBIT_PID"; then
    local pid; pid="$(cat "$RABBIT_PID")"
    kill "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "RabbitMQ stopped (pid $pid)"
  fi
  rm -f "$RABBIT_PID"
  if [ -f "$RABBIT_DIR/started-epmd" ]; then
    epmd -kill >/dev/null 2>&1 || true
    rm -f "$RABBIT_DIR/started-epmd"
  fi
}

# -- FerretDB ---------------------------------------------------------------------------------

FERRET_DIR="$STATE/ferretdb"
FERRET_PID="$FERRET_DIR/ferretdb.pid"

build_ferretdb() {
  [ -x "$FERRETDB_BIN" ] && return
  command -v patch >/dev/null || die "patch is needed to build FerretDB (apt-get install patch)"
  command -v go >/dev/null || die "Go is needed to build FerretDB $FERRETDB_VERSION (apt-get install golang, or set SAGAWIRE_TEST_MONGODB_URL)"
  say "building FerretDB $FERRETDB_VERSION with $(go version | cut -d' ' -f3) (about two minutes, once)"
  local src dir
  dir="$(go mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [ -d "$dir" ] || die "could not download $FERRETDB_MODULE@$FERRETDB_VERSION from the Go module proxy"
  src="$(mktemp -d)"
  cp -r "$dir/." "$src" && chmod -R u+w "$src"
  # The module zip lacks the generated version file that a release build embeds.
  echo "$FERRETDB_VERSION" >"$src/build/version/version.txt"
  local patch
  for patch in "${FERRETDB_PATCHES[@]}"; do
    say "applying $(basename "$patch")"
    patch -d "$src" -p1 --forward --quiet <"$patch" || die "could not apply $patch to FerretDB $FERRETDB_VERSION"
  done
  mkdir -p "$(dirname "$FERRETDB_BIN")"
  (cd "$src" && go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) || die "FerretDB build failed"
  mv "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
  rm -rf "$src"
}

start_ferretdb() {
  if alive "$FERRET_PID"; then say "FerretDB already running (pid $(cat "$FERRET_PID"))"; return; fi
  build_ferretdb
  port_open "$MONGO_PORT" && die "port $MONGO_PORT is taken by another server; stop it, or set SAGAWIRE_SERVICES_MONGO_PORT, or SAGAWIRE_TEST_MONGODB_URL to use it"
  mkdir -p "$FERRET_DIR/data"
  # synchronous(normal): in WAL mode a commit is written to the log but not synced to disk at
  # once. Nothing is lost when a process dies, only on a power cut or an OS crash: the same
  # promise as a standalone MongoDB's default write concern, which acknowledges a write before
  # its journal is synced (every 100 ms).
  # GOGC=400: FerretDB allocates a document tree for every document it reads or writes, and its
  # garbage collector took a fifth of its CPU under load with Go's default of 100. Its heap stays
  # in the tens of MB.
  GOGC=400 nohup "$FERRETDB_BIN" --handler=sqlite --sqlite-url="file:$FERRET_DIR/data/?_pragma=synchronous(normal)" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --state-dir="$FERRET_DIR" --debug-addr=- \
    --telemetry=disable --log-level=warn >"$FERRET_DIR/ferretdb.log" 2>&1 &
  echo $! >"$FERRET_PID"
  wait_port "$MONGO_PORT" 30 FerretDB
  say "FerretDB $FERRETDB_VERSION (SQLite) on port $MONGO_PORT (pid $(cat "$FERRET_PID"))"
}

stop_ferretdb() {
  if alive "$FERRET_PID"; then
    local pid; pid="$(cat "$FERRET_PID")"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    say "FerretDB stopped (pid $pid)"
  fi
  rm -f "$FERRET_PID"
}

# -- commands ---------------------------------------------------------------------------------

write_env() {
  mkdir -p "$STATE"
  {
    echo "SAGAWIRE_TEST_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
    echo "SAGAWIRE_TEST_MONGODB_URL=mongodb://127.0.0.1:$MONGO_PORT/"
  } >"$ENV_FILE"
}

case "${1:-start}" in
  start)
    if [ -n "${SAGAWIRE_TEST_AMQP_URL:-}" ] && [ -n "${SAGAWIRE_TEST_MONGODB_URL:-}" ]; then
      say "using the servers named by SAGAWIRE_TEST_AMQP_URL and SAGAWIRE_TEST_MONGODB_URL"
      exit 0
    fi
    start_rabbitmq
    start_ferretdb
    write_env
    cat "$ENV_FILE"
    ;;
  stop)
    stop_ferretdb
    stop_rabbitmq
    rm -f "$ENV_FILE"
    ;;
  stop-rabbitmq) stop_rabbitmq ;;
  start-rabbitmq) start_rabbitmq ;;
  stop-mongo) stop_ferretdb ;;
  start-mongo) start_ferretdb ;;
  status)
    alive "$RABBIT_PID" && say "RabbitMQ running (pid $(cat "$RABBIT_PID"))" || say "RabbitMQ not running"
    alive "$FERRET_PID" && say "FerretDB running (pid $(cat "$FERRET_PID"))" || say "FerretDB not running"
    ;;
  env)
    [ -f "$ENV_FILE" ] || die "no services started; run: make services"
    cat "$ENV_FILE"
    ;;
  *)
    die "usage: $0 start|stop|status|env|stop-rabbitmq|start-rabbitmq|stop-mongo|start-mongo"
    ;;
esac
