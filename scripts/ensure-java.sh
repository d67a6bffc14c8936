#!/usr/bin/env bash
# Spark needs Java 17+. Use the machine's if it has one; otherwise install Debian's headless JRE.
set -euo pipefail
if java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then exit 0; fi
echo "Java 17+ not found: installing openjdk-17-jre-headless from Debian" >&2
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq openjdk-17-jre-headless
