"""Headless Chromium settings that let it watch this server (end-to-end tests, the latency benchmark)."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; never `playwright install`

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # a fake camera, and no permission prompt for it
    "--use-fake-device-for-media-stream",
    # kept even when only receiving: without it Chromium hides its addresses behind mDNS names
    "--use-fake-ui-for-media-stream",
    # machines with only a loopback interface (CI containers) have no other ICE candidate
    "--allow-loopback-in-peer-connection",
)
