"""The CLI fails early and clearly on bad input, before any work starts."""

import pytest

from jobs.cli import main


def _run(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_bad_config_names_the_field(capsys, tmp_path, clip_model, synth_clips):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window: {frames: -3}\n")
    code, err = _run(capsys, "shards", "build", "--source", synth_clips, "--out", str(tmp_path / "o"),
                     "--config", str(cfg), "--clip-path", clip_model, "--workdir", str(tmp_path))
    assert code == 2 and "window.frames" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_missing_clip_model_and_source(capsys, tmp_path, clip_model, synth_clips):
    code, err = _run(capsys, "shards", "build", "--source", synth_clips, "--out", str(tmp_path / "o"),
                     "--workdir", str(tmp_path))
    assert code == 2 and "embedding.clip_path" in err
    code, err = _run(capsys, "shards", "build", "--source", str(tmp_path / "missing"), "--out", str(tmp_path / "o"),
                     "--clip-path", clip_model, "--workdir", str(tmp_path))
    assert code == 2 and "not a clip directory" in err


def test_unknown_preset(capsys, tmp_path, clip_model, synth_clips):
    code, err = _run(capsys, "shards", "build", "--source", synth_clips, "--out", str(tmp_path / "o"),
                     "--preset", "huge", "--clip-path", clip_model, "--workdir", str(tmp_path))
    assert code == 2 and "preset" in err and "tiny" in err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "synth" in out and "shards" in out and "quickstart" in out


def test_describe_tokenizer_paper(capsys):
    import json

    assert main(["describe", "tokenizer", "--preset", "paper"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert abs(d["encoder_params"] / 85e6 - 1) < 0.1 and abs(d["decoder_params"] / 200e6 - 1) < 0.1
    assert d["latent_shape"] == [3, 14, 30, 64] and d["compression"] == 384


def test_describe_world_model_paper(capsys):
    import json

    from jobs.cli import main

    assert main(["describe", "world-model", "--preset", "paper"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["tokens"] == 12_600 and abs(d["params"] / 8.4e9 - 1) < 0.10
    assert main(["describe", "world-model", "--preset", "huge"]) == 2
    assert "preset: unknown preset 'huge'" in capsys.readouterr().err
