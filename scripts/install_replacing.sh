#!/usr/bin/env bash
# Copy the tree SRC into DEST, replacing each existing file by a rename instead of writing into
# it. Usage: scripts/install_replacing.sh SRC DEST
#
# Why: a running node (and any client) has the interface libraries in DEST mapped into memory.
# `cp` over such a file rewrites the mapped pages under the running processes, which then jump
# into garbage: the SIGSEGV the node fuzzing met (issue 21: the node and its client died at the
# same instant, both in a publish, when scripts/build_interfaces.sh reinstalled the libraries).
# A rename leaves the running processes on the old file (its inode lives until they exit); new
# processes load the new one. Symbolic links are copied as links; modes and times are kept.
set -euo pipefail
SRC="${1:?usage: install_replacing.sh SRC DEST}"
DEST="${2:?usage: install_replacing.sh SRC DEST}"
cd "$SRC"
find . -type d -print0 | while IFS= read -r -d '' dir; do mkdir -p "$DEST/$dir"; done
find . \( -type f -o -type l \) -print0 | while IFS= read -r -d '' path; do
  staged="$(dirname "$DEST/$path")/.$(basename "$path").installing.$$"
  cp -a "$path" "$staged"
  mv -fT "$staged" "$DEST/$path"
done
