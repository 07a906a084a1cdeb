"""`smf gan train / sample random / render / ls` against a file store."""

from __future__ import annotations

import json

from smf.cli import main
from support.tiny_gan import tiny_dict


def test_train_sample_render_ls(tones_store, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(tiny_dict(steps=(2, 2, 2, 2))))
    s = ["--store", tones_store.uri]
    assert main(["gan", "train", "-n", "cli", str(cfg), *s]) == 0
    assert "succeeded: " + tones_store.key_uri("gan/cli") in capsys.readouterr().out
    assert (
        main(["gan", "sample", "random", "-m", "cli", "-n", "2", "--seed", "1", "-o", str(tmp_path / "out"), *s]) == 0
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.pt", "0.wav", "1.pt", "1.wav"]
    capsys.readouterr()
    assert main(["gan", "render", "-m", "cli", str(tmp_path / "out" / "1.pt"), *s]) == 0
    assert "1 sounds: " + tones_store.uri + "/renders/" in capsys.readouterr().out
    assert main(["gan", "ls", *s]) == 0
    assert "cli " in capsys.readouterr().out
    cfg.write_text(json.dumps({**tiny_dict(), "surprise": 1}))
    assert main(["gan", "train", "-n", "cli2", str(cfg), *s]) == 1
    assert "surprise" in capsys.readouterr().err
