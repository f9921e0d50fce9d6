#!/usr/bin/env bash
# Refreshes vendor/ from the npm package pinned in package-lock.json (run by a developer when
# upgrading abcjs; the build and the service never run npm).
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
cp package.json package-lock.json "$work/"
(cd "$work" && npm ci --no-audit --no-fund)
cp "$work/node_modules/abcjs/dist/abcjs-basic-min.js" vendor/
cp "$work/node_modules/abcjs/dist/abcjs-basic-min.js.LICENSE" vendor/
cp "$work/node_modules/abcjs/LICENSE.md" vendor/abcjs-LICENSE.md
sha256sum vendor/abcjs-basic-min.js
rm -rf "$work"
