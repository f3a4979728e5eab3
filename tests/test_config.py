import pytest

from gaia2.config.base import ConfigError
from gaia2.config.shards import load_shard_config


def test_presets_resolve():
    tiny, paper = load_shard_config("tiny"), load_shard_config("paper")
    assert (tiny.image.height, tiny.image.width) == (64, 128)
    assert (paper.image.height, paper.image.width) == (448, 960) and paper.shards.target_mb == 1024
    assert paper.detection.kind == "network" and paper.detection.num_gpus == 1
    # CLIP in the window task on CPUs, in its actor pool on GPUs (embedding.placement auto)
    assert tiny.embedding.in_task() and not paper.embedding.in_task()


def test_yaml_overrides_on_a_named_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: paper\nwindow: {frames: 24}\nbalance: {keys: [country]}\n")
    cfg = load_shard_config(path=str(path))
    assert cfg.preset == "paper" and cfg.window.frames == 24 and cfg.window.hop == 12
    assert cfg.balance.keys == ["country"] and cfg.image.width == 960


@pytest.mark.parametrize("overrides,field", [
    ({"window": {"frames": 0}}, "window.frames"),
    ({"image": {"width": 63}}, "image.width"),
    ({"balance": {"keys": ["colour"]}}, "balance.keys"),
    ({"balance": {"temperature": 0.5}}, "balance.temperature"),
    ({"windw": {"frames": 8}}, "windw"),
    ({"detection": {"kind": "network"}}, "detection.checkpoint"),
    ({"embedding": {"placement": "task", "num_gpus": 1}}, "embedding.placement"),
    ({"embedding": {"placement": "gpu"}}, "embedding.placement"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_shard_config("tiny", overrides=overrides)
    assert field in str(err.value)


def test_unknown_preset_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="preset"):
        load_shard_config("huge")
    with pytest.raises(ConfigError, match="cannot read"):
        load_shard_config(path=str(tmp_path / "missing.yaml"))
