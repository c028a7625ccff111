#!/usr/bin/env bash
# Builds arca, then backs up an example directory, restores it and checks the result.
# Everything is written below a temporary folder, which is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
arca="$PWD/target/release/arca"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ARCA_REPOSITORY="$work/repo" ARCA_CACHE_DIR="$work/cache" ARCA_PASSWORD="example-password"

# An example server: configuration, uploads, and a database dump.
mkdir -p "$work/server/etc/app" "$work/server/uploads/2026"
printf 'listen = 8080\nworkers = 4\n' > "$work/server/etc/app/app.conf"
head -c 3000000 /dev/urandom > "$work/server/uploads/2026/photo.jpg"
seq 1 200000 | sed 's/^/INSERT INTO t VALUES (/; s/$/);/' > "$work/server/dump.sql"
ln -s app.conf "$work/server/etc/app/current.conf"

"$arca" init
"$arca" backup "$work/server" --tag example
echo "more" >> "$work/server/etc/app/app.conf"
"$arca" backup "$work/server" --tag example
"$arca" snapshots
"$arca" ls latest "$work/server/etc" --long
"$arca" restore latest --target "$work/restored"
diff -r "$work/server" "$work/restored$work/server"
"$arca" dump latest "$work/server/dump.sql" | cmp - "$work/server/dump.sql"
"$arca" verify --read-data
echo "quickstart: backup, restore and verify all fine"
