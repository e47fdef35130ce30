#!/usr/bin/env bash
# Install the Node.js test peers (jose, oidc-provider) exactly as pinned in package-lock.json.
# No-op when node_modules already matches the lock (stamp = sha256 of package-lock.json).
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.package-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "$want" > "$stamp"
