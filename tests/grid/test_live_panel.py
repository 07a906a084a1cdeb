"""The grid page's live panel in headless Chromium: a tiny RNN played by a real RnnService over loopback gRPC,
bridged by the auditioner (services/grid/live.py) into the page's AudioWorklet. The pad is moved with the mouse;
the page's window.__smf.live records frames, underruns and knob-to-sound latency, kept in
test-artifacts/live-panel.json. The bridge's bounds (sessions, idle, bad knobs, token) are checked over plain HTTP."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from support import chromium
from support.chromium import headless_chromium

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TOKEN = "live-panel-token"
SR = 16000


@pytest.fixture(scope="module")
def rnn_service(tmp_path_factory):
    """A store with rnn/live (a tiny model trained one step on the tones dataset) and RnnService on loopback."""
    from smf.cli import main
    from smf.common.store import open_store
    from smf.datasets import make_dataset
    from smf.rnn.server import SERVICE_NAME, RnnServicer, servicers
    from support.loopback import loopback_server
    from support.torch_threads import one_torch_thread

    root = tmp_path_factory.mktemp("live-panel")
    store = open_store(f"file://{root}/store")
    make_dataset("tones", store, n_files=8, duration=0.3)
    tiny = ["--hidden", "16", "--layers", "1", "--seq-len", "32", "--batch", "2", "--steps", "1"]
    with one_torch_thread():
        grid_page_grid(store, root)
        args = ["rnn", "train", "--data", "datasets/tones", "--prop", "normPitch", "-n", "live", *tiny]
        assert main([*args, "--device", "cpu", "--store", store.uri]) == 0
        with loopback_server("rnn", servicers(RnnServicer(store)), [SERVICE_NAME], TOKEN) as srv:
            yield store, f"127.0.0.1:{srv.port}"


def grid_page_grid(store, root: Path) -> None:
    """grids/live, 3 x 3, rendered here by a tiny GAN trained one step per scale: the page the panel sits on."""
    import torch
    from smf.cli import main
    from smf.gan.config import parse_config
    from smf.gan.runs import load_model
    from smf.gan.train import Trainer
    from support.tiny_gan import tiny_dict

    Trainer(parse_config(tiny_dict((1, 1, 1, 1), checkpointEvery=1000)), store, "gan/tiny", log=lambda *_: None).run()
    dim, corners = load_model(store, "gan/tiny").latent_dim, []
    for k in range(4):
        torch.save(torch.randn(dim, generator=torch.Generator().manual_seed(k)), root / f"z{k}.pt")
        corners += [f"--z{k}", str(root / f"z{k}.pt")]
    args = ["grid", "2d4pt", "--model", "gan/tiny", *corners, "--d0", "3", "--d1", "3", "--id", "grids/live"]
    assert main([*args, "--store", store.uri]) == 0


def auditioner(rnn_service, **bridge_options):
    from smf.grid.auditioner import Auditioner
    from smf.grid.live import LiveBridge
    from smf.rnn.client import RnnClient

    store, target = rnn_service
    bridge = LiveBridge(RnnClient(target, token=TOKEN), "rnn/live", **bridge_options)
    return Auditioner(store, token=TOKEN, host="127.0.0.1", port=0, live=bridge).start()


def post(url: str, doc, *, token: str | None = TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(url, json.dumps(doc).encode(), {"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def raw(url: str, headers: dict, body: bytes | None = b"{}") -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_bridge_bounds_sessions_knobs_idle_and_token(rnn_service, capsys, monkeypatch):
    from smf.cli import main
    from smf.grid.live import frame

    # smf grid open: the live flags are checked before anything is served
    monkeypatch.setenv("SMF_TOKEN", TOKEN)
    store, target = rnn_service
    base = ["grid", "open", "--store", store.uri, "--no-browser", "--port", "0"]
    assert main([*base, "--model", "rnn/live"]) != 0
    assert "--rnn: --model/--chain need the rnn service" in capsys.readouterr().err
    assert main([*base, "--rnn", target, "--model", "rnn/nope"]) != 0
    assert "--model: rnn/nope is not known to the rnn service (it has ['rnn/live'])" in capsys.readouterr().err
    assert main([*base, "--rnn", target]) != 0
    assert "--model: the live panel needs a model" in capsys.readouterr().err

    aud = auditioner(rnn_service, max_sessions=1, idle_s=0.5, chunk_ms=20)
    try:
        assert aud.live.describe()["params"] == ["normPitch"] and aud.live.sample_rate == SR
        status, body = post(f"{aud.url}/live", {"values": {"normPitch": 0.3}})
        assert status == 200 and body["params"] == ["normPitch"], body
        sid = body["session"]
        status, body = post(f"{aud.url}/live", {})
        assert status == 429 and "limit is 1" in body["error"], body  # RESOURCE_EXHAUSTED past max_sessions
        status, body = post(f"{aud.url}/live/{sid}/knobs", {"values": {"pitch": 0.5}})
        assert status == 400 and "values.pitch" in body["error"] and "normPitch" in body["error"], body
        status, body = post(f"{aud.url}/live/{sid}/knobs", {"values": {"normPitch": 2}})
        assert status == 400 and "[0, 1]" in body["error"], body
        assert post(f"{aud.url}/live/{sid}/knobs", {"values": {"normPitch": 0.9}}, token=None)[0] == 401
        status, body = post(f"{aud.url}/live/{sid}/knobs", {"values": {"normPitch": 0.9}})
        assert status == 200 and body["rev"] == 1, body
        # nobody reads the audio: the session ends after idle_s and frees its slot
        wait_for(lambda: not aud.live.sessions, 15, "the idle session to end")
        status, body = post(f"{aud.url}/live/{sid}/knobs", {"values": {"normPitch": 0.1}})
        assert status == 404 and "start the panel again" in body["error"], body
        assert post(f"{aud.url}/live", {})[0] == 200  # the slot is free again
        auth = {"Authorization": f"Bearer {TOKEN}"}
        json_type = {**auth, "Content-Type": "application/json"}
        assert raw(f"{aud.url}/api/grids", json_type)[0] == 501  # the rest of the API stays read-only
        status, body = raw(f"{aud.url}/live", auth)  # a form's content type is refused (no cross-site POSTs)
        assert status == 400 and b"Content-Type: must be application/json" in body, body
    finally:
        aud.stop()
    assert not aud.live.sessions
    head = np.frombuffer(frame(np.zeros(3, np.float32), 7)[:8], "<u4")
    assert head.tolist() == [3, 7]


def test_a_chained_model_streams_over_http_and_tags_the_knob_it_took(rnn_service):
    """--chain: the knobs are the parameter tier's params; the audio response carries rev-tagged blocks."""
    import struct

    from smf.cli import main
    from support.torch_threads import one_torch_thread

    store, _ = rnn_service
    tiny = ["--hidden", "8", "--layers", "1", "--batch", "2", "--steps", "1", "--device", "cpu", "--store", store.uri]
    train = ["rnn", "train", "--data", "datasets/tones", *tiny]
    with one_torch_thread():
        ctl = ["--generate", "rms", "centroid", "--rate", "125", "--prop", "normPitch", "--seq-len", "16"]
        assert main([*train, *ctl, "-n", "ctl"]) == 0
        assert main([*train, "--prop", "rms", "centroid", "--seq-len", "32", "-n", "aud"]) == 0
    from smf.grid.auditioner import Auditioner
    from smf.grid.live import LiveBridge
    from smf.rnn.client import RnnClient

    bridge = LiveBridge(RnnClient(rnn_service[1], token=TOKEN), "rnn/aud", chain="rnn/ctl", chunk_ms=20)
    aud = Auditioner(store, token=TOKEN, host="127.0.0.1", port=0, live=bridge).start()
    try:
        assert bridge.describe()["params"] == ["normPitch"] and bridge.describe()["chain"] == "rnn/ctl"
        sid = post(f"{aud.url}/live", {"values": {"normPitch": 0.2}})[1]["session"]
        req = urllib.request.Request(f"{aud.url}/live/{sid}/audio", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.headers["Content-Type"] == "application/octet-stream" and r.headers["X-Sample-Rate"] == "16000"
            revs, rev = [], 0
            for n in range(40):
                frames, tag = struct.unpack("<II", r.read(8))
                audio = np.frombuffer(r.read(4 * frames), "<f4")
                assert frames == 320 and np.isfinite(audio).all()
                revs.append(tag)
                if n == 3:
                    rev = post(f"{aud.url}/live/{sid}/knobs", {"values": {"normPitch": 0.9}})[1]["rev"]
                    status, body = raw(f"{aud.url}/live/{sid}/audio", {"Authorization": f"Bearer {TOKEN}"}, None)
                    assert status == 409 and b"already being read" in body, body  # one reader per session
                if rev and tag == rev:
                    break
        assert revs[:4] == [0, 0, 0, 0] and revs[-1] == rev == 1, revs  # the move was heard within a few blocks
        wait_for(lambda: not bridge.sessions, 10, "the session to end when the page stops reading")
    finally:
        aud.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not chromium.available():
        pytest.skip(chromium.MISSING)
    with headless_chromium(tmp_path_factory.mktemp("chromium-live")) as driver:
        yield driver


def test_pad_moves_reach_the_page_through_the_worklet(rnn_service, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # how far the service runs ahead is most of the latency to the ear; docs/benchmarks.md measures a few
    ahead = int(os.environ.get("SMF_TEST_LIVE_AHEAD_MS", "200"))
    aud = auditioner(rnn_service, chunk_ms=50, max_ahead_ms=ahead)
    js = lambda expr: browser.execute_script(f"return {expr}")  # noqa: E731
    try:
        browser.get(f"{aud.url}/grids/live?token={TOKEN}")
        wait_for(lambda: js("window.__smf && window.__smf.live && window.__smf.live.ready"), 30, "the live panel")
        assert js("window.__smf.live.enabled") and js("window.__smf.live.params") == ["normPitch"]
        assert js("window.__smf.panels.length") == 1  # on the grid page, over the grid's 3 x 3 cells
        assert "over-grid" in browser.find_element(By.ID, "live-pad").get_attribute("class")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#live-pad .live-cell")) == 9
        browser.find_element(By.ID, "live-start").click()
        wait_for(lambda: js("window.__smf.live.worklet.played || 0") > SR // 2, 20, "the worklet to play 0.5 s")

        pad = browser.find_element(By.ID, "live-pad")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", pad)
        chain = ActionChains(browser).move_to_element_with_offset(pad, -120, 0).click_and_hold()
        for step in range(24):  # x sweeps the pad: every move a new normPitch, about 8 moves a second
            chain.move_by_offset(10, 0 if step % 2 else 5).pause(0.12)
        chain.release().perform()
        sent = js("window.__smf.live.sentRev")
        assert sent >= 5, sent
        wait_for(lambda: js("window.__smf.live.heardRev") >= sent, 10, f"revision {sent} to be heard")
        time.sleep(1.0)  # a second more of steady play to count underruns over
        live = js("window.__smf.live")
        assert live["errors"] == [] and js("window.__smf.errors") == []
        assert abs(live["values"]["normPitch"] - 0.5) > 0.2, live["values"]  # the pad moved the knob
        assert live["frames"] >= SR and live["worklet"]["received"] >= SR, live["worklet"]
        lat = np.array(live["latencies"])
        assert len(lat) >= 3 and (lat >= 0).all(), lat
        session = aud.live.sessions[live["session"]]
        assert session.heard == sent and abs(session.current[0] - live["values"]["normPitch"]) < 1e-6

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "live-panel.png"))
        browser.find_element(By.ID, "live-start").click()  # stop
        wait_for(lambda: not aud.live.sessions, 10, "the session to end on the server")
        wait_for(lambda: not js("window.__smf.live.running"), 5, "the page to stop")
        figures = {
            "moves_heard": len(lat),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
            "latency_ms_p99": round(float(np.percentile(lat, 99)), 1),
            "ear_ms_p50": round(float(np.percentile(live["earLatencies"], 50)), 1),
            "ear_ms_p99": round(float(np.percentile(live["earLatencies"], 99)), 1),
            "frames_received": live["worklet"]["received"],
            "underruns": live["worklet"]["underruns"],
            "underrun_frames": live["worklet"]["underrunFrames"],
            "dropped": live["worklet"]["dropped"],
            "buffered_ms_at_end": round(1000 * live["worklet"]["fill"] / SR),
            "played_s": round(live["worklet"]["played"] / SR, 2),
            "chunk_ms": 50,
            "max_ahead_ms": ahead,
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "live-panel.json").write_text(json.dumps(figures, indent=1) + "\n")
        print("live panel:", figures)
    finally:
        aud.stop()


def test_serve_grid_takes_the_live_flags_from_the_charts_env(monkeypatch):
    """`smf serve grid` and `smf grid open` share the flags; the chart sets them through $SMF_LIVE_*."""
    import argparse

    from smf.common.errors import InvalidArgument
    from smf.grid.live import add_live_arguments, live_bridge

    monkeypatch.setenv("SMF_LIVE_RNN", "rnn.svc:50054")
    monkeypatch.setenv("SMF_LIVE_MODEL", "rnn/demo")
    monkeypatch.setenv("SMF_LIVE_CHAIN", "rnn/demo-controls")
    parser = argparse.ArgumentParser()
    add_live_arguments(parser)
    args = parser.parse_args([])
    assert (args.rnn, args.live_model, args.chain) == ("rnn.svc:50054", "rnn/demo", "rnn/demo-controls")
    assert parser.parse_args(["--model", "rnn/other"]).live_model == "rnn/other"
    with pytest.raises(InvalidArgument, match="--live-sessions"):
        live_bridge(parser.parse_args(["--live-sessions", "0"]), token=None)
    monkeypatch.delenv("SMF_LIVE_MODEL")
    parser = argparse.ArgumentParser()
    add_live_arguments(parser)
    with pytest.raises(InvalidArgument, match="--model"):
        live_bridge(parser.parse_args([]), token=None)
