"""Screenshots of every `trainctl ui` page for the README, from a real run (after `make demo`: its
job, flags, evolution, rejections and its bench runs are what the pages show), at 1400 px and on a
390 px phone screen (`ui-NAME.png`, `ui-NAME-phone.png`). A page wider than the phone's screen
fails the run.

Usage: .venv/bin/python docs/screenshots.py [--home .] [--out docs/img]   (`make screenshots`)
Needs Debian's chromium (`apt-get install -y chromium`) and playwright (in the dev extras); it
never runs `playwright install`.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "monitor": ("/", "#loss-chart canvas"),
    "job": ("/jobs/1", "#checkpoints table"),
    "flags": ("/flags", "#flag-list table"),
    "compare": ("/compare", "#rows table"),
    "evolution": ("/evolution", "#examples table"),
    "rejected": ("/rejected", "#report .cards"),
}
WIDTHS = {"": (1400, 900), "-phone": (390, 844)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default=str(ROOT))
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"))
    a = ap.parse_args()
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        print("no chromium: apt-get install -y chromium", file=sys.stderr)
        return 1
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ui = subprocess.Popen(
        [sys.executable, "-m", "cli", "ui", "--home", a.home, "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = re.search(r"(http://\S+)", ui.stdout.readline()).group(1).rstrip("/")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox"])
            wide = []
            for suffix, (width, height) in WIDTHS.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                for name, (path, ready) in PAGES.items():
                    page.goto(url + path)
                    # a run that ends well resolves its flags: show them with the open ones
                    if name == "flags":
                        page.wait_for_selector("#state")
                        page.select_option("#state", "all")
                    page.wait_for_selector(ready, timeout=30_000)
                    if name == "evolution":
                        page.click("#examples tbody a >> nth=0")
                        page.wait_for_selector("#example table")
                    # the monitor's first polls
                    page.wait_for_timeout(2500 if name == "monitor" else 800)
                    dest = out / f"ui-{name}{suffix}.png"
                    page.screenshot(path=str(dest))
                    scroll = page.evaluate("() => document.documentElement.scrollWidth")
                    if scroll > width:
                        wide.append(f"{name} at {width} px is {scroll} px wide")
                    print(f"{dest} ({dest.stat().st_size // 1024} KB, {scroll} px wide)")
                page.close()
            browser.close()
            if wide:
                print("pages that scroll sideways: " + "; ".join(wide), file=sys.stderr)
                return 1
    finally:
        ui.terminate()
        ui.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
