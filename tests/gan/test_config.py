"""The SMF config: original-shaped configs load; unknown / missing / bad keys are errors naming the dotted key."""

from __future__ import annotations

import json

import pytest
from smf.common.errors import InvalidArgument
from smf.gan.config import load_config, parse_config
from smf.gan.model import GanArgs, ProgressiveGAN
from support.tiny_gan import CONFIGS, tiny_dict


def test_original_oreilly_config_loads_as_it_is():
    cfg = load_config(CONFIGS / "oreilly_uncond.json")
    assert cfg.transform.n_bins == 257 and cfg.transform.audio_length == 128 * 256
    assert cfg.model.depthScales == [128, 64, 64, 64, 32]
    assert cfg.model.n_scales == 5 and cfg.total_steps == 1_200_000
    assert cfg.model.attributes == []  # ac_gan false: attribKeysOrder is not used
    # the original loader's metadata keys are honoured; its plumbing keys are accepted and reported
    assert cfg.loader.filter_keys == {"sound_source": ["O'REILLY"]}
    assert cfg.loader.att_dict_path.endswith("oreilly.json")
    assert "loaderConfig.dataloader" in cfg.ignored and "modelConfig.imagefolderDataset" in cfg.ignored
    # ... and the network it describes builds, at the shapes of the original (256 generated bins + Nyquist copy)
    args = GanArgs.from_config(cfg)
    assert args.scale_shapes == [(16, 8), (32, 16), (64, 32), (128, 64), (256, 128)]


def test_every_shipped_config_builds_and_round_trips():
    for path in sorted(CONFIGS.glob("*.json")):
        cfg = load_config(path)
        assert parse_config(cfg.to_dict()) == parse_config(json.dumps(cfg.to_dict()))
        gan = ProgressiveGAN(GanArgs.from_config(cfg))
        assert sum(p.numel() for p in gan.G.parameters()) > 0


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda c: c.update(extra=1), "extra"),
        (lambda c: c["modelConfig"].update(depthScale=[1]), "modelConfig.depthScale"),
        (lambda c: c["modelConfig"].pop("depthScales"), "modelConfig.depthScales"),
        (lambda c: c.pop("loaderConfig"), "loaderConfig"),
        (lambda c: c["loaderConfig"].pop("data_path"), "loaderConfig.data_path"),
        (lambda c: c["modelConfig"].update(depthScales=[32, 32, 16]), "modelConfig.depthScales"),
        (lambda c: c["modelConfig"].update(depthScales=[32, 0, 16, 16]), "modelConfig.depthScales[1]"),
        (lambda c: c["modelConfig"].update(dimLatentVector="16"), "modelConfig.dimLatentVector"),
        (lambda c: c["modelConfig"].update(lambdaGP=float("nan")), "modelConfig.lambdaGP"),
        (lambda c: c["modelConfig"].update(lossMode="DCGAN"), "modelConfig.lossMode"),
        (
            lambda c: c["modelConfig"].update(downSamplingFactor=[[8, 8], [4, 4], [3, 2], [1, 1]]),
            "modelConfig.downSamplingFactor[2]",
        ),
        (lambda c: c["modelConfig"].update(ac_gan=True, attribKeysOrder=None), "modelConfig.attribKeysOrder"),
        (lambda c: c["transformConfig"].update(transform="specgrams"), "transformConfig.transform"),
        (lambda c: c["transformConfig"].update(hop_size=4096), "transformConfig.hop_size"),
        (lambda c: c["trainConfig"].update(device="tpu"), "trainConfig.device"),
    ],
)
def test_bad_configs_name_the_field(mutate, field):
    cfg = tiny_dict()
    mutate(cfg)
    with pytest.raises(InvalidArgument) as err:
        parse_config(cfg)
    assert err.value.field == field
    assert field in err.value.message


def test_not_json_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(InvalidArgument) as err:
        load_config(bad)
    assert err.value.field == str(bad)
