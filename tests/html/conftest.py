"""Headless Chromium for the report tests: Debian's `chromium`, installed here when missing and
possible (root with apt-get); otherwise the browser tests skip and say how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find() -> str | None:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _install() -> str:
    """Try `apt-get install chromium`; return why it did not work ('' when it did)."""
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-300:]}"
    return ""


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = _find()
    if path is None:
        why = _install()
        path = _find()
        if path is None:
            pytest.skip(
                f"headless Chromium is not available ({why or 'installed but not found'}); "
                "install Debian's `chromium` package to run the browser tests"
            )
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class PageCheck:
    """A loaded report page with what the browser saw while loading it."""

    def __init__(self, page, console: list[tuple[str, str]], requests: list[str], errors: list[str]):
        self.page, self.console, self.requests, self.errors = page, console, requests, errors


@pytest.fixture
def open_report(browser, tmp_path):
    """open_report(path) -> PageCheck: loads report.html from disk, records console messages,
    page errors and every request, and saves a full-page screenshot under tmp_path."""
    pages = []

    def _open(path: Path, *, shot: str = "report.png") -> PageCheck:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        console: list[tuple[str, str]] = []
        requests: list[str] = []
        errors: list[str] = []
        page.on("console", lambda m: console.append((m.type, m.text)))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(Path(path).resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(tmp_path / shot), full_page=True)
        pages.append(page)
        return PageCheck(page, console, requests, errors)

    yield _open
    for p in pages:
        p.close()


ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def demo_outputs(tmp_path_factory) -> dict[str, Path]:
    """`make demo` in a temporary folder: the repo's pipelines/ on its sample_data/ (real data),
    then the curriculum built from their outputs. Returns name -> output folder."""
    from click.testing import CliRunner

    from dataforge.cli import cli

    base = tmp_path_factory.mktemp("demo")
    shutil.copytree(ROOT / "pipelines", base / "pipelines")
    (base / "sample_data").symlink_to(ROOT / "sample_data")
    old = os.environ.get("DATAFORGE_DEID_SALT")
    os.environ["DATAFORGE_DEID_SALT"] = "dataforge-test-salt-not-secret"
    try:
        runner = CliRunner()
        for args in (
            ["run", "pipelines/demo.yaml"],
            ["run", "pipelines/noise.yaml"],
            ["run", "pipelines/ehr.yaml"],
            ["run", "pipelines/finance.yaml"],
            ["curriculum", "pipelines/curriculum.yaml"],
        ):
            args = [*args[:1], str(base / args[1])]
            res = runner.invoke(cli, ["-q", *args], catch_exceptions=False)
            assert res.exit_code == 0, res.output
    finally:
        if old is None:
            os.environ.pop("DATAFORGE_DEID_SALT", None)
        else:
            os.environ["DATAFORGE_DEID_SALT"] = old
    out = base / "out"
    return {
        "pipeline": out / "demo",
        "noise": out / "demo-noise",
        "noise_fixed": out / "demo-noise" / "fixed",
        "ehr": out / "demo-ehr",
        "finance": out / "demo-finance",
        "curriculum": out / "demo-curriculum",
    }
