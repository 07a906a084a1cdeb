"""R3: the S3 server (a real SeaweedFS) is restarted twice in the middle of a pipeline run (while the GAN trains,
then while the SOM linearizes): the run finishes, and every artifact it left verifies against its manifest
(every store read is sha256-verified, so a torn or stale object would have failed the run)."""

from __future__ import annotations

import threading
import time

from smf.common.errors import SmfError
from smf.common.lineage import list_artifacts, verify_artifact
from smf.common.store import open_store
from smf.pipeline.config import DEMO_CONFIG, load_config
from smf.pipeline.pipeline import Pipeline, read_state
from smf.pipeline.services import local_services

from .helpers import record_figures, wait_for


def test_s3_restarts_mid_pipeline(fresh_s3_server, monkeypatch, tmp_path):
    for k, v in fresh_s3_server.env().items():
        monkeypatch.setenv(k, v)  # the pipeline process and the services it spawns reach the same server
    store = open_store(f"s3://{fresh_s3_server.bucket}/r3")
    cfg = load_config(DEMO_CONFIG.parent / "tiny.json")
    outcome: dict = {}
    log: list[str] = []

    def stage_running(name: str, also=lambda: True):
        def check():
            try:
                rec = read_state(store, cfg.name)["stages"].get(name)
                return bool(rec and rec["state"] == "running" and also())
            except SmfError:  # the server is down for a moment: look again
                return False

        return check

    def ckpt():
        return any("/ckpt/" in k for k in store.list("gan"))

    with local_services(store.uri, log_dir=tmp_path / "logs") as svc:

        def run():
            try:
                outcome["state"] = Pipeline(cfg, store, svc, log=log.append).run()
            except BaseException as exc:  # noqa: BLE001 (re-raised by the main thread)
                outcome["error"] = exc

        t0 = time.monotonic()
        thread = threading.Thread(target=run)
        thread.start()
        restarts = []
        for stage, extra in (("gan", ckpt), ("som", lambda: True)):
            wait_for(
                lambda s=stage, e=extra: stage_running(s, e)() or not thread.is_alive(), 400, f"stage {stage} running"
            )
            if not thread.is_alive():
                break
            r0 = time.monotonic()
            fresh_s3_server.restart()
            restarts.append(
                {"during_stage": stage, "at_s": round(r0 - t0, 1), "restart_s": round(time.monotonic() - r0, 1)}
            )
        thread.join(600)
        wall = time.monotonic() - t0
    assert "error" not in outcome, f"{outcome.get('error')!r}\n" + "\n".join(log[-20:])
    assert outcome["state"]["status"] == "succeeded"
    assert [r["during_stage"] for r in restarts] == ["gan", "som"]
    artifacts = list_artifacts(store)
    for aid in artifacts:
        verify_artifact(store, aid)
    record_figures(
        "R3",
        {
            "restarts": restarts,
            "pipeline_seconds": round(wall, 1),
            "artifacts_verified": len(artifacts),
            "objects": len(store.list()),
            "stages": list(outcome["state"]["ran"]),
        },
    )
