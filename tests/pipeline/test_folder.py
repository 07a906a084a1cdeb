"""A user's own folder through the pipeline: plain notes (no .params) are imported and train the GAN service,
the import policies are config keys checked before any work, and an AC-GAN over plain notes is refused at the gan
stage, before a job starts, naming the file."""

from __future__ import annotations

import json

import pytest
import soundfile as sf
from smf.common.errors import InvalidArgument
from smf.common.lineage import read_manifest
from smf.common.store import open_store
from smf.datasets import generate
from smf.pipeline.config import DEMO_CONFIG, parse_config
from smf.pipeline.pipeline import Pipeline, read_state
from smf.pipeline.services import Services, local_services

TINY = DEMO_CONFIG.parent / "tiny.json"


def plain_notes(folder, n=12):
    """The tiny config's tones as a user would have them: wav only, one of them stereo (downmixed by policy)."""
    folder.mkdir()
    for i, clip in enumerate(generate("tones", n_files=n, seed=0, duration=0.3)):
        audio = clip.audio if i else clip.audio[:, None].repeat(2, axis=1)
        sf.write(folder / f"{clip.name}.wav", audio, 16000, subtype="PCM_16")
    return folder


def folder_config(folder, **dataset) -> dict:
    raw = json.loads(TINY.read_text())
    raw.update(name="mine", dataset={"folder": str(folder), "name": "mine", **dataset})
    return raw


def test_plain_folder_trains_the_gan_through_the_service(tmp_path):
    """The dataset and gan stages of the tiny pipeline over plain notes, the GAN trained by the real GAN service
    (StartTraining on the plain dataset). The later stages work on GAN output, never on the user's files: the whole
    run over a plain folder is measured in docs/user-guide.md rather than repeated here (it takes minutes)."""
    folder = plain_notes(tmp_path / "my notes")
    store = open_store(f"file://{tmp_path}/store")
    raw = folder_config(folder, mono="mean", on_bad_file="skip")
    raw["gan"]["modelConfig"].update(
        maxIterAtScale=[2, 2, 2, 2], alphaNJumps=[1, 1, 1, 1]
    )  # a few steps: the data path
    cfg = parse_config(raw, source="mine.json")
    with local_services(store.uri, log_dir=tmp_path / "logs", names=("gan",)) as svc:
        p = Pipeline(cfg, store, svc, log=lambda m: None)
        dataset = p._stage("dataset", p._dataset_config(), [], p._run_dataset)["dataset"]
        gan_cfg = p._gan_config(dataset)
        model = p._stage("gan", gan_cfg, [dataset], lambda k: p._run_gan(k, gan_cfg))["model"]
        p.close()
    imported = read_manifest(store, dataset)
    assert imported.config["params"] == [] and imported.config["n_files"] == 12
    assert not [f for f in imported.files if f.endswith(".params")]
    assert read_manifest(store, model).inputs == [dataset]
    assert read_state(store, "mine")["stages"]["gan"]["state"] == "done"


@pytest.mark.parametrize(
    "dataset, field",
    [
        ({"mono": "left"}, "dataset.mono"),
        ({"on_bad_file": "ignore"}, "dataset.on_bad_file"),
        ({"sample_rate": 44.1}, "dataset.sample_rate"),
    ],
)
def test_import_policies_are_checked_with_the_config(tmp_path, dataset, field):
    with pytest.raises(InvalidArgument) as err:
        parse_config(folder_config(tmp_path, **dataset), source="mine.json")
    assert err.value.field == f"mine.json: {field}"


def test_policies_of_a_folder_are_refused_for_a_builtin_set():
    raw = json.loads(TINY.read_text())
    raw["dataset"]["mono"] = "mean"
    with pytest.raises(InvalidArgument, match="import policies of a folder"):
        parse_config(raw, source="tiny.json")


def test_ac_gan_over_plain_notes_fails_at_the_gan_stage_naming_a_file(tmp_path):
    folder = plain_notes(tmp_path / "notes")
    raw = folder_config(folder, mono="first")
    raw["gan"]["modelConfig"]["ac_gan"] = True  # tiny.json's attribKeysOrder is {"pitch": 0}
    store = open_store(f"file://{tmp_path}/store")
    with pytest.raises(InvalidArgument) as err:
        # no services: the check runs in the pipeline process, before the GAN service is called
        Pipeline(parse_config(raw, source="ac.json"), store, Services(targets={}, token=None), log=print).run()
    assert err.value.field == "ac.json: gan.modelConfig.ac_gan"
    assert "datasets/mine/tones_000.wav has no .params" in err.value.message
    state = read_state(store, "mine")
    assert state["stages"]["dataset"]["state"] == "done" and state["stages"]["gan"]["state"] == "failed"
