"""The HTML report opens offline in headless Chromium and its charts draw."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _no_network_prefix() -> list[str]:
    """Run Chromium in a fresh network namespace (no interfaces up) where the OS allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def _chromium(html: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        *_no_network_prefix(), CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, html.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report(report_study, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html")
    result = cli("report", str(report_study), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "report.html" in result.stdout
    return out


def test_report_is_self_contained(report):
    text = (report / "report.html").read_text()
    assert not re.search(r"<(script|link)[^>]+(src|href)=", text)  # nothing loaded from elsewhere
    assert len(text) > 3_000_000  # plotly.js is inline
    assert "max_mean_step_ms" in text  # stopped trials listed with their reason
    names = sorted(p.name for p in (report / "figures").glob("*.png"))
    assert names == sorted(f"{w}-{kind}.png" for w in ("steady", "diabetes-svm") for kind in ("curves", "effects", "pareto"))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_charts_draw_in_headless_chromium_with_the_network_off(report, tmp_path):
    html = report / "report.html"
    dom = _chromium(html, tmp_path / "profile-dom", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    charts = dom.stdout.count('class="plotly-graph-div')
    drawn = dom.stdout.count('class="main-svg"')
    assert charts == 6  # curves, effects, pareto for each of two workloads
    assert drawn >= 2 * charts  # plotly draws two main-svg layers per chart
    assert dom.stdout.count('class="trace scatter') > 20
    shot = tmp_path / "report-small-study.png"  # docs/screenshots/ keeps a committed copy; the test leaves it alone
    result = _chromium(html, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,2400",
                       "--hide-scrollbars")
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a drawn page, not a blank one


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="Linux's sysfs: a folder even root cannot write in")
def test_a_report_into_a_folder_it_cannot_write_is_one_line(report_study, capsys):
    """A read-only output folder: a PermissionError, which printed an 18-line traceback (exit 1)."""
    from frugalml.cli import main

    assert main(["report", str(report_study), "--out", "/sys/frugalml-report"]) == 2
    error = capsys.readouterr().err
    assert error == ("frugalml: error: cannot write /sys/frugalml-report: Operation not permitted; choose a "
                     "folder you can write to.\n"), error
