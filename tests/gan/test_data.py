"""The GAN's training data (smf.gan.data): long files cut into clips, silence dropped and counted, pad policies,
clip_hop overlap, the original loader's att_dict / filter_keys / pitch_range, the spectrogram cache, streaming."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from smf.common.audio import save_wav
from smf.common.distributed import Dist
from smf.common.errors import InvalidArgument
from smf.gan.config import parse_config
from smf.gan.data import CachedClips, ClipBatches, InMemoryClips, cut, load_training_data, plan_clips
from smf.gan.train import Trainer
from support.tiny_gan import tiny_dict

SR, CLIP = 16000, 2048  # the tiny config: 32 frames x hop 64 at 16 kHz


def noise(seconds: float, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * level).astype(np.float32)


def config(data_path, **loader):
    cfg = tiny_dict(steps=(1, 1, 1, 1))
    cfg["loaderConfig"] = {"data_path": str(data_path), "shuffle": False, **loader}
    return cfg


def load(data_path, store=None, cfg=None, **loader):
    return load_training_data(parse_config(cfg or config(data_path, **loader)), store)


def test_a_long_texture_gives_many_clips_and_its_silent_stretch_is_dropped_and_counted(tmp_path):
    x = noise(20.0)
    x[8 * SR : 10 * SR] = 0  # two seconds of silence
    save_wav(tmp_path / "rain.wav", x, SR)
    data = load(tmp_path)
    # 320 000 samples: 156 full clips + a 512-sample tail; the clips wholly inside [8 s, 10 s) are offsets
    # 63*2048 .. 77*2048: 15 of them. (The old loader kept one clip: the first 2048 samples.)
    assert (data.counts.files, data.counts.clips, data.counts.silent) == (1, 142, 15)
    assert len(data) == 142 and data.shape == (65, 32)
    assert data.counts.line().startswith("1 files → 142 clips (15 dropped as silent)")
    # silence_db null keeps every clip
    assert load(tmp_path, silence_db=None).counts.clips == 157


def test_pad_policies_for_short_files_and_tails():
    assert plan_clips(1000, CLIP, CLIP, "zero") == [(0, 1000)]
    assert plan_clips(1000, CLIP, CLIP, "repeat") == [(0, 1000)]
    assert plan_clips(1000, CLIP, CLIP, "drop") == []
    assert plan_clips(2 * CLIP + 10, CLIP, CLIP, "zero") == [(0, CLIP), (CLIP, CLIP), (2 * CLIP, 10)]
    assert plan_clips(2 * CLIP + 10, CLIP, CLIP, "drop") == [(0, CLIP), (CLIP, CLIP)]
    x = torch.arange(1, 1001, dtype=torch.float32)
    zero, rep = cut(x, 0, 1000, CLIP, "zero"), cut(x, 0, 1000, CLIP, "repeat")
    assert zero.shape == rep.shape == (CLIP,)
    assert torch.equal(zero[:1000], x) and not zero[1000:].any()
    assert torch.equal(rep, x[torch.arange(CLIP) % 1000])  # looped
    tail = cut(torch.arange(2 * CLIP + 10.0), 2 * CLIP, 10, CLIP, "repeat")
    assert torch.equal(tail[:10], torch.arange(2 * CLIP, 2 * CLIP + 10.0)) and tail[10] == 0  # wraps to the start


def test_pad_drop_on_a_folder_of_short_files_is_an_error_naming_pad(tmp_path):
    save_wav(tmp_path / "blip.wav", noise(0.05), SR)  # 800 samples < one clip
    assert load(tmp_path).counts.clips == 1  # zero-padded by default, as the old loader did
    with pytest.raises(InvalidArgument) as err:
        load(tmp_path, pad="drop")
    assert err.value.field == "loaderConfig.pad" and "1 too short" in err.value.message


def test_clip_hop_overlap_and_max_clips_per_file(tmp_path):
    assert len(plan_clips(10 * CLIP, CLIP, CLIP // 2, "zero")) == 19
    save_wav(tmp_path / "wind.wav", noise(10 * CLIP / SR), SR)
    assert load(tmp_path).counts.clips == 10
    assert load(tmp_path, clip_hop=CLIP // 2).counts.clips == 19
    capped = load(tmp_path, clip_hop=CLIP // 2, max_clips_per_file=4, memory_budget_mb=0)
    assert (capped.counts.clips, capped.counts.capped) == (4, 15)
    # spread over the file, first to last
    assert [capped.clips.describe(i)[1] for i in range(4)] == [0, 6 * 1024, 12 * 1024, 18 * 1024]


def notes(folder, att_format="json"):
    """8 short notes: families a/b, pitches 48..62; their attributes in an NSynth-style table."""
    folder.mkdir()
    table = {}
    for i, (fam, pitch) in enumerate([(f, p) for f in "ab" for p in (48, 52, 56, 62)]):
        stem = f"{fam}_{pitch:03d}"
        save_wav(folder / f"{stem}.wav", noise(0.1, seed=i), SR)
        table[stem] = {"instrument_family_str": fam, "pitch": pitch}
    if att_format == "json":
        path = folder / "examples.json"
        path.write_text(json.dumps(table))
    else:
        path = folder / "examples.csv"
        path.write_text("file,instrument_family_str,pitch\n" + "".join(f"{k},{v['instrument_family_str']},"
                        f"{v['pitch']}\n" for k, v in table.items()))  # fmt: skip
    return path


def stems(data):
    return sorted(name.rsplit("/", 1)[1][:-4] for name in data.files)


@pytest.mark.parametrize("att_format", ["json", "csv"])
def test_att_dict_filter_keys_and_pitch_range_select_the_subset(tmp_path, att_format):
    folder = tmp_path / "notes"
    att = str(notes(folder, att_format))
    fam_a = load(folder, att_dict_path=att, filter_keys={"instrument_family_str": ["a"]})
    assert stems(fam_a) == ["a_048", "a_052", "a_056", "a_062"] and fam_a.counts.filtered_out == 4
    # pitch_range is inclusive; filter_keys AND pitch_range
    both = load(folder, att_dict_path=att, filter_keys={"instrument_family_str": ["b"]}, pitch_range=[52, 62])
    assert stems(both) == ["b_052", "b_056", "b_062"]
    # the original's quirks: two integers are a range lo <= v < hi; several keys: a file matching ANY is kept
    assert stems(load(folder, att_dict_path=att, filter_keys={"pitch": [52, 62]})) == [
        "a_052", "a_056", "b_052", "b_056"
    ]  # fmt: skip
    either = load(folder, att_dict_path=att, filter_keys={"instrument_family_str": ["a"], "pitch": [62, 63]})
    assert stems(either) == ["a_048", "a_052", "a_056", "a_062", "b_062"]


def test_ac_gan_labels_come_from_the_att_dict(tmp_path):
    folder = tmp_path / "notes"
    cfg = config(folder, att_dict_path=str(notes(folder)), pitch_range=[50, 70])
    cfg["modelConfig"].update(ac_gan=True, attribKeysOrder={"pitch": 0})
    data = load(folder, cfg=cfg)
    assert data.classes == {"pitch": [52, 56, 62]}
    assert data.labels.tolist() == [[0], [1], [2], [0], [1], [2]]  # a_052 a_056 a_062 b_052 b_056 b_062


def test_an_original_config_with_filter_keys_trains_on_the_subset_only(tmp_path, file_store):
    folder = tmp_path / "notes"
    att = str(notes(folder))
    cfg = parse_config(config(folder, att_dict_path=att, filter_keys={"instrument_family_str": ["b"]}, size=3))
    lines = []
    tr = Trainer(cfg, file_store, "gan/subset", log=lines.append)
    tr.run()
    assert len(tr.data) == 3 and all("/b_" in f for f in tr.data.files)
    assert any("3 files → 3 clips (0 dropped as silent, 4 files filtered out)" in line for line in lines), lines
    progress = json.loads(file_store.get_bytes("gan/subset/progress.json"))
    assert progress["state"] == "succeeded" and progress["data"]["files"] == 3 and progress["data"]["clips"] == 3
    assert json.loads(file_store.get_bytes("gan/subset/data.json"))["filtered_out"] == 4


@pytest.mark.parametrize(
    "loader, field",
    [
        ({"instrument_labels": ["brass", "flute"]}, "loaderConfig.instrument_labels"),
        ({"filter": ["acoustic"]}, "loaderConfig.filter"),
        ({"balance_att": "instrument"}, "loaderConfig.balance_att"),
        ({"attribute_list": ["pitch"]}, "loaderConfig.attribute_list"),
        ({"att_dict": "x.json"}, "loaderConfig.att_dict"),  # unknown (a typo of att_dict_path)
        ({"filter_keys": {"pitch": [1, 2]}}, "loaderConfig.filter_keys"),  # no att_dict_path to read pitch from
        ({"att_dict_path": "a.json", "pitch_range": [60]}, "loaderConfig.pitch_range"),
        ({"pad": "mirror"}, "loaderConfig.pad"),
    ],
)
def test_metadata_keys_that_would_change_the_data_are_honoured_or_refused(loader, field):
    with pytest.raises(InvalidArgument) as err:
        parse_config(config("datasets/x", **loader))
    assert err.value.field == field and field in err.value.message
    # their no-op spellings load; the original's plumbing keys are accepted and reported
    ok = parse_config(config("datasets/x", instrument_labels=[], filter=["all"], balance_att=False, dataloader={}))
    assert "loaderConfig.dataloader" in ok.ignored


def test_a_filter_key_the_att_dict_lacks_is_an_error_naming_it(tmp_path):
    folder = tmp_path / "notes"
    att = str(notes(folder))
    with pytest.raises(InvalidArgument) as err:
        load(folder, att_dict_path=att, filter_keys={"family": ["a"]})
    assert err.value.field == "loaderConfig.filter_keys.family" and "instrument_family_str" in err.value.message


def test_the_cache_is_hit_on_a_second_load_and_keyed_by_the_transform(tmp_path):
    save_wav(tmp_path / "a.wav", noise(1.0, seed=1), SR)
    save_wav(tmp_path / "b.wav", noise(1.0, seed=2), SR)
    first = load(tmp_path)
    assert first.counts.cache_hits == 0
    again = load(tmp_path)
    assert again.counts.cache_hits == 2 and torch.equal(again.clips.take([0, 7]), first.clips.take([0, 7]))
    cfg = config(tmp_path)
    cfg["transformConfig"].update(hop_size=32, n_frames=64)  # the same 2048-sample clips, another transform
    assert load(tmp_path, cfg=cfg).counts.cache_hits == 0
    assert load(tmp_path).counts.cache_hits == 2  # both transforms' entries are kept, side by side
    save_wav(tmp_path / "a.wav", noise(1.0, seed=3), SR)  # new content: a miss for that file only
    assert load(tmp_path).counts.cache_hits == 1


def test_streamed_clips_hold_descriptors_not_spectrograms_and_read_the_same_batches(tmp_path, file_store):
    for i in range(4):
        save_wav(tmp_path / f"t{i}.wav", noise(4 * CLIP / SR, seed=i), SR)
    ram = load(tmp_path)
    streamed = load(tmp_path, memory_budget_mb=0)
    assert isinstance(ram.clips, InMemoryClips) and isinstance(streamed.clips, CachedClips)
    assert not streamed.counts.in_memory and len(streamed) == len(ram) == 16
    spec_bytes = len(streamed) * 65 * 32 * 4
    assert len(pickle.dumps(streamed.clips)) < spec_bytes / 10  # what a DataLoader worker receives
    assert torch.equal(streamed.sample(), ram.sample())
    # the batches: a function of (seed, step); shards of two ranks are the global batch; workers read the same
    one = ClipBatches(streamed.clips, seed=3, batch_size=lambda s: 8)
    workers = ClipBatches(streamed.clips, seed=3, batch_size=lambda s: 8, num_workers=1)
    ranks = [ClipBatches(ram.clips, seed=3, batch_size=lambda s: 8, dist=Dist(rank=r, world_size=2)) for r in (0, 1)]
    for step in (0, 1, 2, 7, 8):  # a jump (resume) restarts the readers at the step asked for
        idx = one.indices(step)
        assert torch.equal(idx, ranks[1].indices(step))
        want = ram.clips.take(idx)
        assert torch.equal(one.specs(step), want) and torch.equal(workers.specs(step), want)
        assert torch.equal(ranks[0].specs(step), want[0::2]) and torch.equal(ranks[1].specs(step), want[1::2])
    workers.close()
    assert not torch.equal(one.indices(0), one.indices(1))


def test_clips_from_a_store_dataset_file_and_s3(store, tmp_path):
    """data_path as a store key, on both backends: the cache keys on the store's URI, key, size and sha256."""
    for i in range(2):
        save_wav(tmp_path / f"n{i}.wav", noise(3 * CLIP / SR, seed=i), SR)
        store.put_file(f"datasets/mine/n{i}.wav", tmp_path / f"n{i}.wav")
    first = load_training_data(parse_config(config("datasets/mine", memory_budget_mb=0)), store)
    assert (first.counts.files, first.counts.clips, first.counts.cache_hits) == (2, 6, 0)
    assert first.clips.describe(4) == ("datasets/mine/n1.wav", CLIP, CLIP)
    again = load_training_data(parse_config(config("datasets/mine")), store)
    assert again.counts.cache_hits == 2 and torch.equal(again.clips.take([4]), first.clips.take([4]))


def test_smf_gan_train_an_ac_gan_on_a_plain_folder_with_att_dict_labels(tmp_path, file_store, capsys):
    """`smf gan train` on a folder without .params: the AC-GAN's labels come from att_dict_path."""
    from smf.cli import main

    folder = tmp_path / "notes"
    cfg = config(folder, att_dict_path=str(notes(folder)), filter_keys={"instrument_family_str": ["a"]})
    cfg["modelConfig"].update(ac_gan=True, attribKeysOrder={"pitch": 0})
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    assert main(["gan", "train", "-n", "notes", str(path), "--store", file_store.uri]) == 0
    assert "4 files → 4 clips" in capsys.readouterr().out
    model = json.loads(file_store.get_bytes("gan/notes/model.json"))
    assert model["classes"] == {"pitch": [48, 52, 56, 62]}
