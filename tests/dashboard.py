"""Drives the dashboard in headless Chromium (Debian's chromium and chromedriver, through
selenium from .venv) against a running target, as its operator or a stranger would, and
checks what the page shows against the truth the calling test sent.

Reads a JSON list of scenarios on stdin; each is
  {"name": ..., "url": "http://127.0.0.1:PORT", "token": ... or null,
   "expect": {"status": text the page must say} or
             {"week": "YYYY-Www", "count": N, "series": {week: N},
              "breakdowns": {dimension: {value: N, ..., "withheld": N}}},
   "sign_out": bool}
and saves a screenshot of each view as <screenshots>/<name>.png. Prints one line per
problem and exits 1 if there is any; every request the page made must be to its own origin.
Run by rollback/tests/dashboard.rs and tests/worker.rs.
"""

import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

WAIT_SECONDS = 20


def browser(downloads):
    options = webdriver.ChromeOptions()
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads.resolve()),
        "download.prompt_for_download": False,
    })
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1200,2400", "--disable-gpu",
                     # No request of the browser's own (updates, safe browsing) in the log.
                     "--disable-background-networking", "--no-first-run",
                     "--disable-component-update", "--disable-sync"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_for(condition, what):
    deadline = time.time() + WAIT_SECONDS
    while time.time() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception:  # the page is still being built
            pass
        time.sleep(0.1)
    raise TimeoutError(what)


def table(element):
    rows = {}
    for row in element.find_elements(By.CSS_SELECTOR, "tbody tr"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        rows[cells[0]] = int(cells[1])
    return rows


def requests_made(driver):
    """Every URL the page requested, from Chromium's network log, and the page's headers."""
    urls, page_headers = [], {}
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
        if message["method"] == "Network.responseReceived":
            response = message["params"]["response"]
            if urlsplit(response["url"]).path == "/dashboard/":
                page_headers = {k.lower(): v for k, v in response["headers"].items()}
    return urls, page_headers


def adoption_of(driver, week):
    """The adoption table's rows for one week, as {value: sessions}."""
    rows = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "#adoption-table tbody tr"):
        cells = [cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
        if len(cells) == 3 and cells[0] == week:
            rows[cells[1]] = int(cells[2])
    return rows


def check_adoption(driver, name, expect, screenshots):
    """Adoption over the series' weeks: this week's rows are its breakdown, one band per row;
    then the same over 104 weeks, and along another dimension."""
    problems = []
    week, breakdowns = expect["week"], expect["breakdowns"]
    dimensions = [d for d in ["daemon_version", "node_major"] if d in breakdowns]
    if not dimensions:
        return [f"{name}: the scenario names no breakdown to check adoption against"]
    for dimension in dimensions:
        Select(driver.find_element(By.ID, "adoption-by")).select_by_value(dimension)
        try:
            wait_for(lambda: adoption_of(driver, week) == breakdowns[dimension], f"adoption by {dimension}")
        except TimeoutError:
            problems.append(f"{name}: adoption by {dimension} shows {adoption_of(driver, week)}, "
                            f"expected {breakdowns[dimension]}")
        rows = len(driver.find_elements(By.CSS_SELECTOR, "#adoption-table tbody tr"))
        bands = len(driver.find_elements(By.CSS_SELECTOR, "#adoption-chart svg rect.band"))
        if bands != rows:
            problems.append(f"{name}: adoption by {dimension} draws {bands} bands for {rows} rows")
    Select(driver.find_element(By.ID, "span")).select_by_value("104")
    try:
        wait_for(lambda: len(table(driver.find_element(By.ID, "series-table"))) == 104
                 and driver.find_element(By.ID, "adoption-title").text.endswith("104 weeks")
                 and adoption_of(driver, week) == breakdowns[dimensions[-1]], "104 weeks")
    except TimeoutError:
        problems.append(f"{name}: the 104-week view shows "
                        f"{len(table(driver.find_element(By.ID, 'series-table')))} weeks")
    series = table(driver.find_element(By.ID, "series-table"))
    if series.get(week) != expect["count"]:
        problems.append(f"{name}: over 104 weeks, {week} shows {series.get(week)}")
    driver.save_screenshot(str(screenshots / f"{name}-104-weeks.png"))
    Select(driver.find_element(By.ID, "span")).select_by_value("13")
    wait_for(lambda: len(table(driver.find_element(By.ID, "series-table"))) == 13, "13 weeks again")
    return problems


def run(scenario, screenshots):
    problems = []
    name = scenario["name"]
    origin = scenario["url"].rstrip("/")
    downloads = screenshots / f"{name}-downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    for old in downloads.iterdir():
        old.unlink()
    driver = browser(downloads)
    try:
        driver.get(f"{origin}/dashboard/")
        stored_token = scenario.get("stored_token")
        if stored_token is not None:
            # A token left in the tab from before (say, before the readout became public).
            driver.execute_script(
                "sessionStorage.setItem('relay-telemetry-read-token', arguments[0])", stored_token)
            driver.refresh()
        token = scenario.get("token")
        if token is not None:
            field = wait_for(lambda: driver.find_element(By.ID, "token"), "the token field")
            wait_for(field.is_displayed, "the sign-in form")
            field.send_keys(token)
            driver.find_element(By.CSS_SELECTOR, "#sign-in button").click()
        expect = scenario["expect"]
        if "status" in expect:
            said = wait_for(lambda: expect["status"] in driver.find_element(By.ID, "status").text
                            and driver.find_element(By.ID, "status").text, "the status")
            if driver.find_element(By.ID, "numbers").is_displayed():
                problems.append(f"{name}: numbers shown with {said!r}")
            if token is not None and "That token was not accepted" in said:
                left = driver.execute_script("return sessionStorage.length")
                if left != 0:
                    problems.append(f"{name}: a refused token was kept ({left} items)")
        else:
            wait_for(lambda: driver.find_element(By.ID, "numbers").is_displayed()
                     and len(driver.find_elements(By.CSS_SELECTOR, "#breakdowns .breakdown")) == 5,
                     "the numbers")
            if driver.find_element(By.ID, "sign-in").is_displayed():
                problems.append(f"{name}: the sign-in form is still shown beside the numbers")
            shown = driver.find_element(By.ID, "current-count").text
            if shown != str(expect["count"]):
                problems.append(f"{name}: this week shows {shown}, expected {expect['count']}")
            series = table(driver.find_element(By.ID, "series-table"))
            if len(series) != 13:
                problems.append(f"{name}: the series has {len(series)} weeks")
            for week, count in expect["series"].items():
                if series.get(week) != count:
                    problems.append(f"{name}: series {week} shows {series.get(week)}, expected {count}")
            for dimension, counts in expect["breakdowns"].items():
                section = driver.find_element(By.ID, f"by-{dimension}")
                rows = table(section)
                if rows != counts:
                    problems.append(f"{name}: by {dimension} shows {rows}, expected {counts}")
                bars = len(section.find_elements(By.CSS_SELECTOR, "svg rect.bar"))
                if bars != len(counts):
                    problems.append(f"{name}: by {dimension} draws {bars} bars for {len(counts)} rows")
            note = driver.find_element(By.ID, "week-note").text
            if "note" in expect and expect["note"] not in note:
                problems.append(f"{name}: the week's note says {note!r}, expected {expect['note']!r}")
            mode = driver.find_element(By.ID, "mode").text
            if "mode" in expect and expect["mode"] not in mode:
                problems.append(f"{name}: the page says {mode!r}, expected {expect['mode']!r}")
            if "status" in scenario:
                said = driver.find_element(By.ID, "status").text
                if scenario["status"] not in said:
                    problems.append(f"{name}: the status says {said!r}, expected {scenario['status']!r}")
            # The token is in this tab's session storage only (and a refused one nowhere).
            stored = driver.execute_script("return sessionStorage.getItem('relay-telemetry-read-token')")
            if stored != token:
                problems.append(f"{name}: session storage holds {stored!r}")
            leaks = driver.execute_script("return [localStorage.length, document.cookie]")
            if leaks != [0, ""]:
                problems.append(f"{name}: local storage or cookies hold {leaks}")
            if token and token in driver.current_url:
                problems.append(f"{name}: the token is in the URL")
        driver.save_screenshot(str(screenshots / f"{name}.png"))
        if "status" not in expect:
            problems.extend(check_adoption(driver, name, expect, screenshots))
            # The readout's own CSV, fetched with the token: the series, and one breakdown.
            driver.find_element(By.CSS_SELECTOR, '[data-csv="series"]').click()
            driver.find_element(By.CSS_SELECTOR, "#by-platform button.csv").click()
            csvs = wait_for(lambda: len(list(downloads.glob("*.csv"))) == 2
                            and sorted(downloads.glob("*.csv")), "two CSV downloads")
            texts = {path.name: path.read_bytes().decode() for path in csvs}
            series_csv = next((t for n, t in texts.items() if not n.endswith("-platform.csv")), "")
            platform_csv = next((t for n, t in texts.items() if n.endswith("-platform.csv")), "")
            if not series_csv.startswith("week,weekly_active_sessions\r\n"):
                problems.append(f"{name}: the series CSV reads {series_csv[:80]!r}")
            if not platform_csv.startswith("week,by,value,sessions\r\n"):
                problems.append(f"{name}: the breakdown CSV reads {platform_csv[:80]!r}")
            if f"{expect['week']},{expect['count']}" not in series_csv:
                problems.append(f"{name}: the series CSV lacks this week's count")
        if scenario.get("sign_out"):
            driver.find_element(By.ID, "sign-out").click()
            wait_for(lambda: driver.find_element(By.ID, "sign-in").is_displayed(), "the sign-in form")
            stored = driver.execute_script("return sessionStorage.length")
            if stored != 0:
                problems.append(f"{name}: signing out left {stored} items in session storage")
            driver.save_screenshot(str(screenshots / f"{name}-signed-out.png"))
        urls, headers = requests_made(driver)
        foreign = [url for url in urls if not (url.startswith(origin + "/") or url.startswith("blob:"))]
        if foreign:
            problems.append(f"{name}: requests to another origin: {foreign}")
        if not any(urlsplit(url).path == "/dashboard/app.js" for url in urls):
            problems.append(f"{name}: the page's script was never requested: {urls}")
        policy = headers.get("content-security-policy", "")
        for directive in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                          "frame-ancestors 'none'", "base-uri 'none'"):
            if directive not in policy:
                problems.append(f"{name}: the page's policy lacks {directive}: {policy!r}")
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                  and "Failed to load resource" not in entry["message"]]
        if errors:
            problems.append(f"{name}: the console says {errors}")
    except TimeoutError as waited:
        status = driver.find_element(By.ID, "status").text
        problems.append(f"{name}: no {waited} within {WAIT_SECONDS} s; the page says {status!r}")
        driver.save_screenshot(str(screenshots / f"{name}-timed-out.png"))
    finally:
        driver.quit()
    return problems


def main():
    screenshots = Path(sys.argv[1])
    screenshots.mkdir(parents=True, exist_ok=True)
    problems = []
    for scenario in json.load(sys.stdin):
        problems.extend(run(scenario, screenshots))
    for problem in problems:
        print(problem)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
