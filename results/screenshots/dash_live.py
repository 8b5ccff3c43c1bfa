"""Poll the Ray dashboard Actors view until a trial actor is ALIVE, then screenshot it (1280x800)."""

import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

url, out = sys.argv[1], sys.argv[2]
token = Path.home().joinpath(".ray/auth_token").read_text().strip()
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    ctx.add_cookies([{"name": "ray-authentication-token", "value": token, "url": url}])
    page = ctx.new_page()
    deadline = time.time() + 240
    while time.time() < deadline:
        page.goto(f"{url}/#/actors", wait_until="networkidle")
        page.wait_for_timeout(2500)
        if any("PPO(" in r and "ALIVE" in r for r in page.locator("tr").all_inner_texts()):
            page.screenshot(path=out)
            print("captured", time.strftime("%H:%M:%S"))
            break
    else:
        sys.exit("no ALIVE trial actor within 240 s")
    browser.close()
