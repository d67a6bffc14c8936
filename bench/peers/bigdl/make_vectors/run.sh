#!/usr/bin/env bash
# Regenerate tests/vectors/bigdl/ with MakeVectors.scala (Scala 2.12 + JCE + Jackson from Maven Central).
# Usage: bench/peers/bigdl/make_vectors/run.sh [OUT_DIR]   (default: tests/vectors/bigdl)
# Needs java/javac 17 and mvn. Everything downloaded or compiled stays under a temporary directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../../../.." && pwd)"
out="${1:-$repo/tests/vectors/bigdl}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mvn -q -f "$here/pom.xml" dependency:build-classpath -Dmdep.outputFile="$work/cp.txt"
cp="$(cat "$work/cp.txt")"
mkdir -p "$work/classes"
java -cp "$cp" scala.tools.nsc.Main -usejavacp -d "$work/classes" "$here/MakeVectors.scala"
java -cp "$work/classes:$cp" MakeVectors "$out"
echo "vectors written to $out"
