#!/usr/bin/env bash
# Fuzzes OCart against its own OpenAPI 3.1 document with schemathesis (`--checks all`,
# authenticated), on a debug build serving a fresh SQLite data directory.
#
#   scripts/schemathesis.sh                      # the whole API
#   scripts/schemathesis.sh --include-tag offers # any further `st run` options (filters, …)
#   ST_GROUPS=issue11 scripts/schemathesis.sh    # funnels, bumps, upsells, offers/reports,
#                                                # gateways, payment webhooks, sandbox
#
# Environment: ST_VENV (default /tmp/st-venv), WORK (default a new temp dir), PORT (default
# 18080), MAX_TIME (default 480 s), MAX_EXAMPLES (default 50), SEED (default 1), BUILD=0 to use
# the binary already built. The server's stderr is $WORK/serve.err, schemathesis's reports
# (JUnit, NDJSON) are in $WORK/report. Exit code: schemathesis's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ST_VENV=${ST_VENV:-/tmp/st-venv}
WORK=${WORK:-$(mktemp -d /tmp/ocart-st.XXXXXX)}
PORT=${PORT:-18080}
MAX_TIME=${MAX_TIME:-480}
MAX_EXAMPLES=${MAX_EXAMPLES:-50}
SEED=${SEED:-1}

# 1. schemathesis in its own venv.
if [ ! -x "$ST_VENV/bin/st" ]; then
  python3 -m venv "$ST_VENV"
  "$ST_VENV/bin/pip" install --quiet schemathesis
fi
"$ST_VENV/bin/st" --version

# 2. The debug binary.
if [ "${BUILD:-1}" != 0 ]; then
  (cd "$ROOT" && cargo build -p ocart-api --bin ocart)
fi
OCART="$ROOT/target/debug/ocart"

# 3. A config: budgets high enough that requests reach validation rather than the limiter,
# webhook secrets so the webhooks check signatures (401) instead of answering 503, DKIM so
# dns-check needs no selector, Stripe and PayPal pointed at a closed local port (their calls
# fail as "unavailable", never reaching the network).
mkdir -p "$WORK/data" "$WORK/report"
cat > "$WORK/ocart.toml" <<TOML
data_dir = "$WORK/data"
bind = "127.0.0.1:$PORT"
[rate_limit]
capture_requests = 1000000
restore_requests = 1000000
pixel_requests = 1000000
unsubscribe_per_token = 1000000
bump_requests = 1000000
[http]
cors_origins = ["https://shop.example.com"]
[email]
webhook_secret = "fuzz-webhook-secret"
[email.dkim]
domain = "shop.example.com"
selector = "ocart"
algorithm = "ed25519"
private_key = "$(head -c 32 /dev/urandom | base64)"
[woocommerce]
webhook_secret = "fuzz-woo-secret"
[gateways.stripe]
secret_key = "sk_test_fuzz"
webhook_secrets = ["whsec_fuzz"]
api_base = "http://127.0.0.1:9"
timeout_secs = 2
[gateways.paypal]
client_id = "fuzz"
client_secret = "fuzz"
webhook_id = "WH-FUZZ"
api_base = "http://127.0.0.1:9"
TOML
export OCART_CONFIG="$WORK/ocart.toml"

# 4. An admin token from the CLI (it migrates the fresh store), then the server.
TOKEN=$("$OCART" --json token create --name schemathesis \
  --cap ocart_manage,ocart_manage_funnels,ocart_manage_offers,ocart_manage_recovery,ocart_manage_tests,ocart_view_reports,ocart_run_migration,ocart_view_personal_data \
  2> "$WORK/token.err" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$OCART" serve --bind "127.0.0.1:$PORT" 2> "$WORK/serve.err" &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/ocart/v1/ping" > /dev/null 2>&1 && break
  sleep 0.2
done

# 5. The run.
FILTER=()
if [ "${ST_GROUPS:-}" = issue11 ]; then
  FILTER=(--include-path-regex '^/ocart/v1/(funnels|bumps|upsells|reports/offers|gateways|webhooks/(stripe|paypal)|sandbox)')
fi
set +e
# From the work dir, so schemathesis's cache (.schemathesis/) stays out of the repository.
cd "$WORK"
"$ST_VENV/bin/st" --config-file "$ROOT/tests/fuzz/schemathesis.toml" \
  run "http://127.0.0.1:$PORT/ocart/v1/openapi" --checks all \
  -H "Authorization: Bearer $TOKEN" \
  --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" --seed "$SEED" --continue-on-failure \
  --report junit,ndjson --report-dir "$WORK/report" \
  "${FILTER[@]}" "$@"
RC=$?
set -e
echo "panics in the server log: $(grep -c panicked "$WORK/serve.err" || true)"
echo "work dir: $WORK (serve.err, report/)"
exit $RC
