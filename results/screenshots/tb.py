"""Screenshot TensorBoard's Scalars view filtered to the objective curves, headless at 1280x800:
smoothing off, outliers kept in the y-range."""

import sys

from playwright.sync_api import sync_playwright

url, out = sys.argv[1], sys.argv[2]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{url}/#scalars&tagFilter=objective&_smoothingWeight=0", wait_until="networkidle")
    page.wait_for_timeout(4000)
    page.get_by_text("Ignore outliers in chart scaling").click()
    page.wait_for_timeout(1500)
    page.wait_for_timeout(2500)
    page.screenshot(path=out, full_page=False)
    browser.close()
