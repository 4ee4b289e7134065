"""The search page in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``) driven by
selenium against uvicorn serving the app on a loopback port, with the bundled MiniLM, a ten-paper index and the
three-subject classifier of ``conftest.py``.

What the page shows is compared with what the API answers to the same request, so the test checks the page,
not the ranking. (The docs' screenshot, on real papers, comes from ``scripts/page_screenshot.py``.)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import faiss
import httpx
import pandas as pd
import pytest
from serve_helpers import changed, served_in_thread

from arxiv_embed.onnx import OnnxEncoder
from arxiv_embed.text import papers_texts
from serve.app import create_app
from serve.settings import Settings
from stages.faiss_build import INDEX_FILE, paper_meta, write_meta

pytest_plugins = ["onnx_fixtures"]  # onnx_minilm_dir: the bundled MiniLM exported once per session

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
)

KEY = "page-key"
WAIT_S = 30

# id, title, primary subject, all categories, authors, published, update_date, abstract
PAPERS = [
    (
        "2101.00001",
        "Graph neural networks for molecule property prediction",
        "cs.LG",
        ["cs.LG", "physics.chem-ph"],
        ["Mira Okafor", "Jonas Lindqvist"],
        "2021-01-04",
        "2021-03-02",
        "We predict solubility and toxicity of small molecules with message-passing graph neural networks over "
        "atoms and bonds, and compare them with fingerprints and gradient-boosted trees on public benchmarks.",
    ),
    (
        "2101.00002",
        "Dark matter halos of dwarf galaxies",
        "astro-ph.GA",
        ["astro-ph.GA", "astro-ph.CO"],
        ["Ines Duarte", "Tomasz Wolski"],
        "2021-01-05",
        "2021-01-05",
        "Rotation curves of forty dwarf galaxies constrain the inner density profiles of their dark matter halos; "
        "cores are preferred over cusps, which we relate to feedback from star formation.",
    ),
    (
        "2101.00003",
        "Prime gaps and the distribution of primes in arithmetic progressions",
        "math.NT",
        ["math.NT"],
        ["Lea Fontaine"],
        "2021-01-06",
        "2022-05-01",
        "We bound the gaps between consecutive primes in arithmetic progressions to large moduli, using sieve "
        "weights of Maynard type and a new large-sieve inequality.",
    ),
    (
        "2101.00004",
        "Attention-based transformers for machine translation",
        "cs.LG",
        ["cs.LG", "cs.CL"],
        ["Ravi Menon", "Hana Sato", "Pablo Ortega"],
        "2020-06-12",
        "2020-12-01",
        "An encoder-decoder built only from attention layers translates English to German and French better "
        "than recurrent models, and trains in a fraction of their time on eight accelerators.",
    ),
    (
        "2101.00005",
        "Star formation in spiral galaxy arms",
        "astro-ph.GA",
        ["astro-ph.GA"],
        ["Grace Adeyemi"],
        "2019-11-20",
        "2019-11-20",
        "Molecular gas maps of nearby spiral galaxies show that star formation efficiency is higher in the arms "
        "than between them, in line with density-wave compression of the gas.",
    ),
    (
        "2101.00006",
        "Elliptic curves over number fields and their ranks",
        "math.NT",
        ["math.NT", "math.AG"],
        ["Katarina Novak", "Samuel Reyes"],
        "2021-02-01",
        "2021-02-01",
        "We compute the average rank of elliptic curves over cubic number fields ordered by height and show that "
        "a positive proportion of them have rank zero.",
    ),
    (
        "2101.00007",
        "Convolutional networks for galaxy morphology classification",
        "astro-ph.GA",
        ["astro-ph.GA", "cs.LG"],
        ["Oliver Brandt", "Yuki Tanaka"],
        "2021-03-15",
        "2021-03-15",
        "A convolutional neural network trained on citizen-science labels sorts survey images of galaxies into "
        "spirals, ellipticals and mergers with accuracy close to expert agreement.",
    ),
    (
        "2101.00008",
        "Zeros of the Riemann zeta function on the critical line",
        "math.NT",
        ["math.NT", "math.CV"],
        ["Anton Petrov"],
        "2018-07-09",
        "2020-01-10",
        "We show that more than two fifths of the nontrivial zeros of the Riemann zeta function lie on the "
        "critical line, improving the mollifier method.",
    ),
    (
        "2101.00009",
        "Stochastic gradient descent with adaptive learning rates",
        "cs.LG",
        ["cs.LG", "math.OC", "stat.ML"],
        [],
        "2021-04-02",
        "2021-04-02",
        "We analyse adaptive step sizes for stochastic gradient descent on non-convex objectives and give "
        "convergence rates that match those of tuned constant step sizes.",
    ),
    (
        "math/0601001",
        "Modular forms and the arithmetic of quadratic fields",
        "math.NT",
        ["math.NT"],
        ["Elena Marchetti"],
        "2006-01-02",
        "2006-01-02",
        "Class numbers of imaginary quadratic fields appear as Fourier coefficients of a weight three-halves "
        "modular form, which we use to count fields of bounded discriminant.",
    ),
]
COLUMNS = ["id", "title", "subject", "subjects", "authors", "published", "update_date", "abstract"]


@pytest.fixture(scope="module")
def page_index_dir(tmp_path_factory: pytest.TempPathFactory, encoder: OnnxEncoder) -> Path:
    """An exact index of the ten papers as faiss_build writes it: their texts embedded, every metadata column."""
    folder = tmp_path_factory.mktemp("page_index")
    papers = pd.DataFrame(PAPERS, columns=COLUMNS)
    vectors = encoder.encode(papers_texts(papers), normalize=True)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(folder / INDEX_FILE))
    write_meta(paper_meta(papers), folder)
    return folder


@pytest.fixture(scope="module")
def server(settings: Settings, page_index_dir: Path) -> Iterator[str]:
    """The app with an API key, served by uvicorn on a loopback port (in a thread of this process)."""
    with served_in_thread(create_app(changed(settings, index_dir=page_index_dir, api_key=KEY))) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    options.add_argument("--window-size=1100,1400")
    # The DevTools network events, and the console
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def api(server: str, method: str, path: str, body: dict | None = None) -> httpx.Response:
    return httpx.request(
        method, f"{server}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=WAIT_S
    )


def wait_until(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message)


def open_page(driver, server: str, key: str | None = KEY) -> None:
    """The page with ``key`` in this tab's sessionStorage (none: a first visit), its subjects loaded."""
    driver.get(f"{server}/")
    driver.execute_script(
        "sessionStorage.clear(); if (arguments[0]) sessionStorage.setItem(arguments[1], arguments[0]);",
        key,
        "arxiv-embed-api-key",
    )
    driver.refresh()
    if key:
        wait_until(
            driver,
            lambda d: len(d.find_elements("css selector", "#include-subjects option")) > 0,
            "no subjects",
        )


def answers(driver) -> int:
    """How many searches the page has answered (results or an error) since it loaded."""
    return int(driver.find_element("id", "results").get_attribute("data-answers") or 0)


def wait_for_answer(driver, before: int) -> None:
    wait_until(driver, lambda d: answers(d) > before, "the search did not finish")


def search(driver, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element("id", "query")
    box.clear()
    box.send_keys(text)
    before = answers(driver)
    box.send_keys(Keys.ENTER)  # Enter submits; Shift+Enter would start a new line
    wait_for_answer(driver, before)


def shown_ids(driver) -> list[str]:
    return [li.get_attribute("data-id") for li in driver.find_elements("css selector", "#results > li")]


def api_ids(server: str, body: dict) -> list[str]:
    response = api(server, "POST", "/search", body)
    assert response.status_code == 200, response.text
    return [hit["id"] for hit in response.json()["results"]]


def select_subjects(driver, select_id: str, subjects: list[str]) -> None:
    from selenium.webdriver.support.ui import Select

    details = driver.find_element("id", "subject-filter")
    if not details.get_attribute("open"):
        details.find_element("tag name", "summary").click()
    select = Select(driver.find_element("id", select_id))
    select.deselect_all()
    for subject in subjects:
        select.select_by_value(subject)


def submit(driver) -> None:
    before = answers(driver)
    driver.find_element("id", "search-button").click()
    wait_for_answer(driver, before)


def test_first_visit_asks_for_the_key_then_lists_the_subjects(browser, server: str) -> None:
    open_page(browser, server, key=None)
    error = wait_until(
        browser,
        lambda d: d.find_element("id", "error") if d.find_element("id", "error").is_displayed() else None,
        "no error shown",
    )
    assert "API key" in error.text
    assert browser.find_element("id", "key-box").get_attribute("open") is not None
    browser.find_element("id", "api-key").send_keys(KEY)
    browser.find_element("id", "save-key").click()
    wait_until(
        browser, lambda d: len(d.find_elements("css selector", "#include-subjects option")) > 0, "no subjects"
    )
    assert not browser.find_element("id", "error").is_displayed()
    expected = api(server, "GET", "/subjects").json()
    options = browser.find_elements("css selector", "#include-subjects option")  # in the closed filter box
    labels = [o.get_attribute("textContent") for o in options]
    assert labels == [f"{s['subject']} ({s['primary']})" for s in expected["subjects"]]
    assert browser.execute_script("return sessionStorage.getItem('arxiv-embed-api-key')") == KEY


def test_a_query_shows_the_apis_results_with_links_authors_dates_and_abstracts(browser, server: str) -> None:
    open_page(browser, server)
    query = "dark matter in dwarf galaxies"
    search(browser, query)
    expected = api(server, "POST", "/search", {"text": query, "k": 10}).json()
    assert shown_ids(browser) == [hit["id"] for hit in expected["results"]]
    assert shown_ids(browser)[0] == "2101.00002"
    assert browser.find_element("id", "status").text.startswith(
        f"10 of {expected['matched']} matching papers"
    )

    first, hit = browser.find_element("css selector", "#results > li"), expected["results"][0]
    link = first.find_element("css selector", ".title a")
    assert link.text == hit["title"]
    assert link.get_attribute("href") == f"https://arxiv.org/abs/{hit['id']}"
    assert first.find_element("css selector", "a.pdf").get_attribute("href") == hit["pdf_url"]
    assert first.find_element("css selector", ".authors").text == ", ".join(hit["authors"])
    assert first.find_element("css selector", "time").text == hit["published"]
    assert first.find_element("css selector", ".score").text == f"score {hit['score']:.3f}"
    chips = [c.text for c in first.find_elements("css selector", ".chips .chip")]
    assert chips == hit["subjects"]
    assert first.find_element("css selector", ".chip.primary").text == hit["subject"]
    abstract = first.find_element("css selector", "details.abstract")
    assert abstract.get_attribute("open") is None
    assert not abstract.find_element("tag name", "p").is_displayed()
    abstract.find_element("tag name", "summary").click()
    assert abstract.find_element("tag name", "p").text == hit["abstract"]

    # A paper without authors shows none (and no empty line for them).
    no_authors = browser.find_element("css selector", '#results > li[data-id="2101.00009"]')
    assert not no_authors.find_elements("css selector", ".authors")

    # The query's predicted subjects, above the results, as /classify ranks them.
    top = api(server, "POST", "/classify", {"text": query, "top_n": 3}).json()["top"]
    wait_until(browser, lambda d: d.find_element("id", "predicted").is_displayed(), "no predicted subjects")
    predicted = [c.text.split()[0] for c in browser.find_elements("css selector", "#predicted-list .chip")]
    assert predicted == [t["subject"] for t in top]
    assert predicted[0] == "astro-ph.GA"
    assert browser.find_element("id", "predicted").location["y"] < first.location["y"]


def test_subject_filters_keep_only_those_subjects(browser, server: str) -> None:
    open_page(browser, server)
    query = "numbers and fields"
    search(browser, query)
    assert len(shown_ids(browser)) == len(PAPERS)

    select_subjects(browser, "include-subjects", ["math.NT"])
    assert "only math.NT" in browser.find_element("id", "filter-summary").text
    submit(browser)
    ids = shown_ids(browser)
    assert ids == api_ids(server, {"text": query, "k": 10, "filters": {"subjects": ["math.NT"]}})
    assert sorted(ids) == sorted(p[0] for p in PAPERS if p[2] == "math.NT")
    primaries = [c.text for c in browser.find_elements("css selector", "#results .chip.primary")]
    assert primaries == ["math.NT"] * len(ids)

    # "any": cs.LG as any category also finds the astro-ph.GA paper cross-listed in cs.LG.
    select_subjects(browser, "include-subjects", ["cs.LG"])
    browser.find_element("css selector", 'input[name="match"][value="any"]').click()
    assert browser.find_element("css selector", '#include-subjects option[value="cs.LG"]').text == "cs.LG (4)"
    submit(browser)
    ids = shown_ids(browser)
    assert ids == api_ids(
        server, {"text": query, "k": 10, "filters": {"subjects": ["cs.LG"], "match": "any"}}
    )
    assert sorted(ids) == sorted(p[0] for p in PAPERS if "cs.LG" in p[3])

    # Exclude, and a date range on the first version.
    select_subjects(browser, "include-subjects", [])
    select_subjects(browser, "exclude-subjects", ["math.NT", "cs.LG"])
    browser.execute_script("document.getElementById('date-from').value = '2020-01-01'")
    submit(browser)
    ids = shown_ids(browser)
    filters = {"exclude_subjects": ["math.NT", "cs.LG"], "match": "any", "date_from": "2020-01-01"}
    assert ids == api_ids(server, {"text": query, "k": 10, "filters": filters})
    assert ids == ["2101.00002"]  # astro-ph.GA, not cross-listed in cs.LG, published in 2021


def test_similar_papers_searches_by_the_papers_id_from_the_keyboard(browser, server: str) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    search(browser, "prime numbers")
    first = shown_ids(browser)[0]
    button = browser.find_element("css selector", "#results > li .similar")
    assert button.tag_name == "button" and button.text == "Similar papers"
    before = answers(browser)
    button.send_keys(Keys.ENTER)
    wait_for_answer(browser, before)
    ids = shown_ids(browser)
    assert ids == api_ids(server, {"paper_id": first, "k": 10})
    assert first not in ids and len(ids) == len(PAPERS) - 1
    assert browser.find_element("id", "similar-to").is_displayed()
    assert browser.find_element("id", "status").text.endswith(f"similar to arXiv:{first}.")
    focused = browser.switch_to.active_element
    assert focused.text == browser.find_element("css selector", "#results .title a").text

    # The old-style id with a slash works as well.
    old = browser.find_element("css selector", '#results > li[data-id="math/0601001"] .similar')
    before = answers(browser)
    old.click()
    wait_for_answer(browser, before)
    assert shown_ids(browser) == api_ids(server, {"paper_id": "math/0601001", "k": 10})


def test_an_oversized_query_shows_the_apis_reason(browser, server: str, settings: Settings) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    browser.find_element("id", "query").send_keys(Keys.ENTER)  # nothing typed yet: no request
    assert browser.find_element("id", "error").text == "Type a title or an abstract first."
    browser.execute_script(
        "document.getElementById('query').value = 'x'.repeat(arguments[0])", settings.max_chars + 1
    )
    before = answers(browser)
    browser.find_element("id", "query").send_keys(Keys.ENTER)
    wait_for_answer(browser, before)
    error = browser.find_element("id", "error")
    assert error.is_displayed()
    assert error.get_attribute("role") == "alert"
    assert "too large" in error.text
    assert f"{settings.max_chars + 1} characters; at most {settings.max_chars}" in error.text
    assert shown_ids(browser) == []


def test_a_reversed_date_range_shows_the_apis_422(browser, server: str) -> None:
    open_page(browser, server)
    search(browser, "galaxies")
    assert shown_ids(browser)
    browser.execute_script(
        "document.getElementById('date-from').value = '2021-03-01';"
        "document.getElementById('date-to').value = '2021-01-01';"
    )
    submit(browser)
    error = browser.find_element("id", "error")
    assert error.text.startswith("The request was not accepted: ")
    assert "date_from 2021-03-01 is after date_to 2021-01-01" in error.text
    assert shown_ids(browser) == []  # no stale results under the error


def test_an_overloaded_server_is_retry_after_seconds(browser, server: str) -> None:
    """The page's reading of a 429 in the API's error shape (test_api.py makes the server send a real one)."""
    open_page(browser, server)
    browser.execute_script(
        """const real = window.fetch;
        window.fetch = (path, init) => path === "/search"
          ? Promise.resolve(new Response(JSON.stringify({error: "4 texts are waiting", error_type: "overloaded"}),
              {status: 429, headers: {"Retry-After": "7", "Content-Type": "application/json"}}))
          : real(path, init);"""
    )
    search(browser, "anything")
    error = browser.find_element("id", "error")
    assert error.text == "The server is busy (4 texts are waiting). Try again in 7 s."


def test_the_page_fits_a_phone_width_screen(browser, server: str) -> None:
    browser.set_window_size(375, 812)
    try:
        open_page(browser, server)
        search(browser, "graph neural networks")
        select_subjects(browser, "include-subjects", [])
        width = browser.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
        assert width[0] <= 375
        assert width[1] <= width[0], (
            f"the page scrolls sideways: {width[1]} px wide in a {width[0]} px window"
        )
        button = browser.find_element("id", "search-button")
        assert button.size["width"] >= width[0] - 60  # the submit button takes the width of a phone
    finally:
        browser.set_window_size(1100, 1400)


def test_keyboard_focus_is_visible(browser, server: str) -> None:
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    browser.find_element("id", "query").send_keys("x")
    browser.switch_to.active_element.send_keys(Keys.TAB)  # to the k field
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "k"
    assert focused.value_of_css_property("outline-style") == "solid"


def outside_requests(driver, server: str) -> tuple[list[str], list[str]]:
    """The requests to other hosts since the last call: all of them, and those the browser sent out (not refused
    by the page's Content-Security-Policy)."""
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    refused = {
        e["params"]["requestId"]
        for e in events
        if e["method"] == "Network.loadingFailed" and e["params"].get("blockedReason") == "csp"
    }
    outside = [
        (e["params"]["requestId"], e["params"]["request"]["url"])
        for e in events
        if e["method"] == "Network.requestWillBeSent"
        and e["params"]["request"]["url"].startswith(("http://", "https://"))
        and not e["params"]["request"]["url"].startswith(server)
    ]
    return [url for _, url in outside], [url for rid, url in outside if rid not in refused]


def test_swagger_ui_and_redoc_render_from_local_files(browser, server: str) -> None:
    outside_requests(browser, server)  # forget the earlier tests' requests
    for path, selector in (("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")):
        browser.get(f"{server}{path}")
        title = wait_until(
            browser,
            lambda d, s=selector: next(
                (e for e in d.find_elements("css selector", s) if "arXiv embedding API" in e.text), None
            ),
            f"{path} did not render",
        )
        assert title.is_displayed()
        if path == "/docs":  # the endpoints are listed, from /openapi.json
            assert browser.find_elements("css selector", ".opblock-summary-path[data-path='/search']")
        tried, sent = outside_requests(browser, server)
        assert sent == [], f"{path} loaded {sent}"
        # ReDoc's sidebar logo is on its CDN: refused by the Content-Security-Policy, and hidden.
        assert set(tried) <= {"https://cdn.redoc.ly/redoc/logo-mini.svg"}, tried


def test_the_search_page_asks_no_other_host_and_logs_no_error(browser, server: str) -> None:
    open_page(browser, server)
    outside_requests(browser, server)
    browser.get_log("browser")
    search(browser, "galaxies")
    browser.find_element("css selector", "#results details.abstract summary").click()
    browser.find_element("css selector", "#results > li .similar").click()
    wait_until(browser, lambda d: d.find_element("id", "similar-to").is_displayed(), "no similar papers")
    assert outside_requests(browser, server) == ([], [])
    # No script error, no Content-Security-Policy violation, no failed request.
    assert [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []


def test_a_search_is_in_the_address_bar_and_back_returns_to_the_one_before(browser, server: str) -> None:
    open_page(browser, server)
    search(browser, "galaxies")
    select_subjects(browser, "include-subjects", ["astro-ph.GA"])
    submit(browser)
    filtered = shown_ids(browser)
    assert browser.current_url == f"{server}/?q=galaxies&k=10&subjects=astro-ph.GA"

    # A shared link opens the same search, filter included.
    browser.get(f"{server}/?q=galaxies&k=10&subjects=astro-ph.GA")
    wait_until(browser, lambda d: answers(d) > 0, "the linked search did not run")
    assert shown_ids(browser) == filtered
    assert browser.find_element("css selector", '#include-subjects option[value="astro-ph.GA"]').is_selected()
    assert browser.find_element("id", "query").get_attribute("value") == "galaxies"

    # Similar papers is a link too (GET /papers/{id} gives its title back), and Back returns to the query.
    first = shown_ids(browser)[0]
    before = answers(browser)
    browser.find_element("css selector", "#results > li .similar").click()
    wait_for_answer(browser, before)
    similar = shown_ids(browser)
    assert browser.current_url == f"{server}/?like={first}&k=10&subjects=astro-ph.GA"
    before = answers(browser)
    browser.back()
    wait_for_answer(browser, before)
    assert shown_ids(browser) == filtered
    assert not browser.find_element("id", "similar-to").is_displayed()
    before = answers(browser)
    browser.forward()
    wait_for_answer(browser, before)
    assert shown_ids(browser) == similar
    title = api(server, "GET", f"/papers/{first}").json()["title"]
    assert browser.find_element("id", "similar-title").text == title

    # An old-style id keeps its slash in /papers/{id}.
    browser.get(f"{server}/?like=math/0601001")
    wait_until(browser, lambda d: answers(d) > 0, "the linked search did not run")
    assert shown_ids(browser) == api_ids(server, {"paper_id": "math/0601001", "k": 10})
