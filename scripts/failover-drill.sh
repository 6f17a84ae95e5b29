#!/usr/bin/env bash
# The DNS swap's data steps (RUNBOOK.md, "The DNS swap, and back"), as one script for the
# rehearsal (--local, against `wrangler dev --persist-to DIR`) and for real (--remote):
#
#   scripts/failover-drill.sh to-rollback    MODE --store URL [WEEK …]
#   scripts/failover-drill.sh back-to-worker MODE --store URL --backfill URL [WEEK …]
#   scripts/failover-drill.sh replay-deletions    --store URL --worker URL
#
# MODE is --local --persist-to DIR, or --remote. WEEKs default to the ones a record may be
# in (this ISO week and the 12 before it). ADMIN_TOKEN is the Worker's admin token (its
# DELETE); BACKFILL_TOKEN the backfill Worker's (ADMIN_TOKEN unless set). ROLLBACK is the
# rollback binary (`rollback` unless set; with sudo, `ROLLBACK="sudo rollback"`).
#
# - to-rollback: every week's records from the Worker's KV into the rollback's store (every
#   page of the listing), then the Worker's deletion journal, so that the rollback holds
#   what the Worker held and nothing it deleted.
# - back-to-worker (before the Worker takes requests again): the Worker's deletion journal
#   once more, the rollback's weeks into KV, and the weeks' objects backfilled from it.
# - replay-deletions (once the rollback takes no more requests): every session deleted on
#   the rollback, deleted on the Worker; those it answered leave the rollback's journal.
#
# Session ids pass from one command to the next through pipes; the one file (the bulk put's
# input, which wrangler needs) lives in a private directory removed however the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,10p' "$0" >&2
  exit 2
}

step=${1:-}
[ -n "$step" ] || usage
shift
mode=() store="" worker="" backfill="" weeks=()
while [ $# -gt 0 ]; do
  case "$1" in
    --local) mode+=(--local); shift ;;
    --remote) mode+=(--remote); shift ;;
    --persist-to) mode+=(--persist-to "${2:?--persist-to needs a directory}"); shift 2 ;;
    --store) store=${2:?--store needs a URL}; shift 2 ;;
    --worker) worker=${2:?--worker needs a URL}; shift 2 ;;
    --backfill) backfill=${2:?--backfill needs a URL}; shift 2 ;;
    -*) usage ;;
    *) weeks+=("$1"); shift ;;
  esac
done
[ -n "$store" ] || usage
if [ ${#weeks[@]} -eq 0 ]; then
  for back in $(seq 12 -1 0); do weeks+=("$(date -u -d "-$back weeks" +%G-W%V)"); done
fi
read -r -a rollback <<<"${ROLLBACK:-rollback}"

kv_list() { node scripts/kv-list.mjs --prefix "$1" "${mode[@]}"; }

worker_deletions_to_rollback() {
  kv_list "deletion:" | "${rollback[@]}" import-deletions - --store "$store"
}

case "$step" in
  to-rollback)
    [ ${#mode[@]} -gt 0 ] || usage
    for week in "${weeks[@]}"; do
      printf '%s: ' "$week"
      # The listing follows every page, so it is the whole week.
      kv_list "session:$week:" | "${rollback[@]}" import-kv - --listing-is-whole --store "$store"
    done
    worker_deletions_to_rollback
    ;;
  back-to-worker)
    [ ${#mode[@]} -gt 0 ] && [ -n "$backfill" ] || usage
    worker_deletions_to_rollback
    dump=$(mktemp -d)
    trap 'rm -rf "$dump"' EXIT
    "${rollback[@]}" export-kv "${weeks[@]}" --store "$store" >"$dump/bulk.json"
    if [ "$(head -c 2 "$dump/bulk.json")" != "[]" ]; then
      node_modules/.bin/wrangler kv bulk put --binding SESSIONS "${mode[@]}" "$dump/bulk.json"
    fi
    rm -rf "$dump"
    backfill_token=${BACKFILL_TOKEN:-${ADMIN_TOKEN:-}}
    if [ -z "$backfill_token" ]; then
      echo "BACKFILL_TOKEN (or ADMIN_TOKEN): the backfill Worker's admin token" >&2
      exit 2
    fi
    ADMIN_TOKEN=$backfill_token node scripts/backfill.mjs "$backfill" "${weeks[@]}"
    ;;
  replay-deletions)
    [ -n "$worker" ] || usage
    if [ -z "${ADMIN_TOKEN:-}" ]; then
      echo "ADMIN_TOKEN: the Worker's admin token" >&2
      exit 2
    fi
    "${rollback[@]}" deletions --store "$store" | while read -r id; do
      # Only an id the Worker answered for leaves the journal; a failure stays for next time.
      # The token goes to curl on a file descriptor, never on its command line (ps shows it).
      if curl -sf -o /dev/null -X DELETE -H @<(printf 'Authorization: Bearer %s\n' "$ADMIN_TOKEN") \
        "$worker/v1/session/$id"; then
        echo "$id"
      fi
    done | "${rollback[@]}" forget-deletions - --store "$store"
    ;;
  *) usage ;;
esac
