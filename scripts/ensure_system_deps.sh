#!/usr/bin/env bash
# Open3D's wheel links against libusb-1.0 (a Debian package, not a pip one).
# Installs it when missing and we are root; otherwise says exactly what to run.
set -euo pipefail
if ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so\.0'; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing libusb-1.0-0 (needed by open3d) with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
else
    echo "setup: open3d needs the system library libusb-1.0; install it, e.g.:" >&2
    echo "    sudo apt-get install libusb-1.0-0      (Debian/Ubuntu)" >&2
    echo "    sudo dnf install libusbx                (Fedora/RHEL)" >&2
    exit 1
fi
