#!/usr/bin/env bash
# Re-creates assets/graphiql/ from the npm registry with pinned versions, so the
# GraphiQL page works without internet access (the files are embedded in the binary).
# Needs: npm, tar, sha256sum. Usage: scripts/vendor-graphiql.sh
set -euo pipefail

GRAPHIQL_VERSION=3.9.0   # newest 3.x; 4+ no longer ships the UMD build
REACT_VERSION=18.3.1

dest="$(cd "$(dirname "$0")/.." && pwd)/assets/graphiql"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$work"
for pkg in "graphiql@$GRAPHIQL_VERSION" "react@$REACT_VERSION" "react-dom@$REACT_VERSION"; do
  name="${pkg%@*}"
  mkdir "$name"
  # npm pack checks the tarball against the registry's integrity hash.
  tarball="$(npm pack --silent "$pkg")"
  tar -xzf "$tarball" -C "$name" --strip-components=1
done

mkdir -p "$dest"
install -m 0644 graphiql/graphiql.min.js graphiql/graphiql.min.css "$dest/"
install -m 0644 react/umd/react.production.min.js "$dest/"
install -m 0644 react-dom/umd/react-dom.production.min.js "$dest/"
install -m 0644 graphiql/LICENSE "$dest/LICENSE.graphiql"
install -m 0644 react/LICENSE "$dest/LICENSE.react"
install -m 0644 react-dom/LICENSE "$dest/LICENSE.react-dom"

cd "$dest"
sha256sum graphiql.min.js graphiql.min.css react.production.min.js react-dom.production.min.js > SHA256SUMS
echo "vendored graphiql@$GRAPHIQL_VERSION, react@$REACT_VERSION, react-dom@$REACT_VERSION into $dest"
