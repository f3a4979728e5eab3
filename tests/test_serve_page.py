"""The service's page for people (``jobs/serve/page/index.html``, served at the app root) in a real headless
browser: Debian's ``chromium`` (``make test`` installs it where missing), driven by Playwright's Python package
through ``executable_path`` (Playwright's own browser downloads are never used). The page reads the options,
submits a generation from the form, follows its progress to ``done`` and plays the video.

The ``served`` fixture (``tests/conftest.py``) is a running Serve app with tiny models; ``served.url`` is its
base URL. Optional attributes ``served.rig`` and ``served.latent_steps`` pick what the test generates.
A different browser binary: ``GAIA2_CHROMIUM=/path/to/chrome``.
"""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import pytest

from gaia2.generation.spec import parse_spec

GENERATION_TIMEOUT_S = 120
TERMINAL = ("done", "failed", "cancelled", "rejected", "lost")


def _chromium() -> str:
    for name in (os.environ.get("GAIA2_CHROMIUM"), "chromium", "chromium-browser"):
        path = name and shutil.which(name)
        if path:
            return path
    pytest.fail("no chromium to test the page with: `apt-get install chromium` (`make test` does), "
                "or point GAIA2_CHROMIUM at a Chrome / Chromium binary")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the page test needs Playwright's Python package (`pip install playwright`; the dev extras)")
    executable = _chromium()
    with sync_playwright() as pw:
        # Headless, no sandbox (tests often run as root), no GPU; muted autoplay is allowed anyway.
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=[
            "--disable-gpu", "--disable-dev-shm-usage", "--mute-audio", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required", "--renderer-process-limit=2"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, served):
    """The page loaded from the app root, with its options read; ``.log`` collects what went wrong in it."""
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    log: list[str] = []
    posted: list[dict] = []
    pg.on("console", lambda m: log.append(f"console.{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: log.append(f"page error: {e}"))
    pg.on("requestfailed", lambda r: log.append(f"request failed: {r.method} {r.url}: {r.failure}"))
    pg.on("response", lambda r: r.status >= 400 and log.append(f"HTTP {r.status}: {r.request.method} {r.url}"))

    def on_request(request):
        if request.method == "POST" and request.url.rstrip("/").endswith("/v1/generations"):
            posted.append(json.loads(request.post_data or "null"))

    pg.on("request", on_request)
    t = SimpleNamespace(page=pg, log=log, posted=posted, served=served)
    response = pg.goto(served.url)
    assert response is not None and response.ok, f"GET {served.url}: {response and response.status}\n{_report(t)}"
    try:
        pg.wait_for_selector("body[data-ready='1']", timeout=30_000)
    except Exception:  # noqa: BLE001 - the report says why
        pytest.fail(f"the page did not load its options (GET v1/options)\n{_report(t)}")
    yield t
    context.close()


def _report(t) -> str:
    """What the page shows and what its console and network said: the reason a check failed."""
    try:
        shown = t.page.evaluate("""() => ({
            status: document.querySelector('#status')?.textContent,
            progress: document.querySelector('#progress_text')?.textContent,
            error: document.querySelector('#error')?.textContent,
            spec: document.querySelector('#spec')?.textContent})""")
    except Exception as err:  # noqa: BLE001
        shown = {"unreadable": repr(err)}
    lines = [f"  #status: {shown.get('status')!r}  progress: {shown.get('progress')!r}",
             f"  #error: {shown.get('error')!r}"]
    if t.posted:
        lines.append(f"  specs posted: {json.dumps(t.posted)}")
    else:
        lines.append(f"  spec on the page: {' '.join((shown.get('spec') or '').split())}")
    lines.append("  browser log:")
    lines += [f"    {line}" for line in t.log[-40:]] or ["    (empty)"]
    return "\n".join(lines)


def _rig(t) -> str:
    rigs = t.page.eval_on_selector_all("#rig option", "os => os.map(o => o.value).filter(Boolean)")
    assert rigs, f"no rigs offered\n{_report(t)}"
    want = getattr(t.served, "rig", None)
    assert want is None or want in rigs, f"rig {want} not offered ({rigs})"
    return want or rigs[0]


def _wait_terminal(t, timeout_s: float) -> str:
    try:
        t.page.wait_for_function(
            f"() => {json.dumps(list(TERMINAL))}.includes(document.querySelector('#status').dataset.status)",
            timeout=timeout_s * 1000, polling=250)
    except Exception:  # noqa: BLE001
        pytest.fail(f"the generation did not finish within {timeout_s} s\n{_report(t)}")
    return t.page.get_attribute("#status", "data-status")


PLAYS = """async (timeoutMs) => {
  const v = document.querySelector('#video');
  const deadline = Date.now() + timeoutMs;
  const until = async (ok) => { while (!ok()) { if (v.error || Date.now() > deadline) return false;
                                               await new Promise(r => setTimeout(r, 50)); } return true; };
  const loaded = await until(() => v.readyState >= 1);   // HAVE_METADATA: loadedmetadata has fired
  const out = () => ({src: v.currentSrc, duration: v.duration, readyState: v.readyState, currentTime: v.currentTime,
                      videoWidth: v.videoWidth, videoHeight: v.videoHeight,
                      error: v.error && `${v.error.code} ${v.error.message}`});
  if (!loaded) return {...out(), stage: 'metadata'};
  const t0 = v.currentTime;
  try { await v.play(); } catch (e) { return {...out(), stage: 'play', playError: String(e)}; }
  const advanced = await until(() => v.readyState >= 2 && v.currentTime > t0);
  return {...out(), stage: advanced ? 'playing' : 'advance', advanced, t0};
}"""


def test_page_generates_and_plays_the_video(page):
    t, pg = page, page.page
    pg.select_option("#mode", "scratch")
    rig = _rig(t)
    pg.select_option("#rig", rig)
    window = pg.evaluate("window.gaia2.state.options.limits.window")   # the model's, when the server says
    pg.fill("#latent_steps", str(getattr(t.served, "latent_steps", None) or min(window or 3, 3)))
    pg.fill("#steps", "2")
    pg.fill("#seed", "0")
    pg.click("#generate")
    status = _wait_terminal(t, GENERATION_TIMEOUT_S)
    assert status == "done", f"the generation ended {status!r}\n{_report(t)}"

    # What the page sent is a valid spec, and the one the form describes.
    assert len(t.posted) == 1, _report(t)
    spec = parse_spec(t.posted[0])
    assert spec.mode.kind == "scratch" and spec.rig.name == rig and spec.sampler.steps == 2, t.posted[0]

    # The video loads (a duration from its metadata) and plays (frames decoded, the clock moves).
    state = pg.evaluate(PLAYS, 30_000)
    assert state["stage"] == "playing", f"the video does not play: {state}\n{_report(t)}"
    assert 0 < state["duration"] < float("inf") and state["videoWidth"] > 0, f"{state}\n{_report(t)}"
    assert pg.evaluate("document.querySelector('#progress').value") == pytest.approx(1.0)
    assert pg.text_content("#error") == "", _report(t)
    # Links to the files: the video, each camera's, the latents and the spec.
    links = pg.eval_on_selector_all("#links a", "as => as.map(a => a.href)")
    assert any(h.endswith(".mp4") for h in links) and any(h.endswith("latents.npy") for h in links) and \
        any(h.endswith("spec.json") for h in links), f"links: {links}\n{_report(t)}"
    resp = pg.request.get(next(h for h in links if h.endswith("spec.json")))
    assert resp.ok, f"GET spec.json: {resp.status}"


def test_page_shows_the_servers_spec_error(page):
    t, pg = page, page.page
    pg.select_option("#mode", "scratch")
    pg.select_option("#rig", _rig(t))
    pg.fill("#steps", "2")
    pg.fill("#guidance", "99")   # over the spec's limit of 50: the server answers 422 naming the field
    pg.click("#generate")
    pg.wait_for_function("document.querySelector('#error').textContent.length > 0", timeout=30_000)
    error = pg.text_content("#error")
    assert "422" in error and "guidance.scale" in error, f"{error!r}\n{_report(t)}"
    assert pg.get_attribute("#status", "data-status") == "rejected"
    assert pg.is_enabled("#generate") and not pg.is_enabled("#cancel")


def test_page_builds_valid_specs_for_every_mode(page):
    """Each mode, with profiles, metadata, agents and a source, gives a spec that ``parse_spec`` accepts;
    nothing is submitted."""
    t, pg = page, page.page
    build = "() => window.gaia2.buildSpec()"
    samples = pg.eval_on_selector_all("#source_sample option", "os => os.map(o => o.value).filter(Boolean)")
    specs = {}

    pg.select_option("#mode", "scratch")
    pg.select_option("#rig", _rig(t))
    pg.fill("#latent_steps", "4")
    pg.select_option("#speed_profile", "start_from_stop")
    pg.fill("#speed_speed", "10")
    pg.select_option("#curvature_profile", "turn_left")
    pg.fill("#curvature_curvature", "0.05")
    pg.select_option("#meta_weather", "rain")
    pg.click("#add_agent")
    pg.click("#add_agent")
    pg.select_option("#agents .agent:nth-child(2) .a_category", "pedestrian")
    pg.fill("#agents .agent:nth-child(2) .a_yaw", "90")
    pg.fill("#agents .agent:nth-child(2) .a_speed", "1.5")
    pg.fill("#guidance", "3")
    pg.check("#selective")
    specs["scratch"] = pg.evaluate(build)
    agents = specs["scratch"]["agents"]
    assert [a["category"] for a in agents] == ["car", "pedestrian"]
    assert agents[1]["velocity"] == pytest.approx([0.0, 1.5], abs=1e-6)
    assert specs["scratch"]["metadata"] == {"weather": "rain"}
    assert specs["scratch"]["action"]["speed"] == {"profile": "start_from_stop", "speed": 10}

    pg.select_option("#mode", "rollout")
    pg.select_option("#source_kind", "generation")
    pg.fill("#source_generation", "abc123")
    pg.fill("#latent_steps", "6")
    specs["rollout"] = pg.evaluate(build)
    assert specs["rollout"]["mode"]["context"] == {"generation": "abc123"} and "rig" not in specs["rollout"]

    if samples:
        pg.select_option("#source_kind", "sample")
        pg.select_option("#mode", "edit")
        pg.check("#inherit_action")
        pg.check("#inherit_agents")
        specs["edit"] = pg.evaluate(build)
        assert specs["edit"]["mode"]["source"] == {"sample": samples[0]} and "duration" not in specs["edit"]
        assert specs["edit"]["inherit"] == ["action", "agents"] and "agents" not in specs["edit"]
        pg.uncheck("#inherit_agents")
        pg.uncheck("#selective")
    pg.select_option("#mode", "inpaint")
    pg.select_option("#mask_kind", "rect")
    specs["inpaint"] = pg.evaluate(build)
    assert specs["inpaint"]["mode"]["mask"] == [{"rect": [0.25, 0.25, 0.75, 0.75]}]

    for mode, spec in specs.items():
        parsed = parse_spec(spec, where=mode)
        assert parsed.mode.kind == mode, spec
    assert not t.posted
