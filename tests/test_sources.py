import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gaia2.config.shards import load_shard_config
from gaia2.schema.clip import dumps
from gaia2.schema.errors import Reason
from pipelines.shards.ingest import IngestClips
from pipelines.shards.sources import SourceError, list_clips, read_record, write_manifest


def _staged(synth_clips, tmp_path) -> tuple[str, str]:
    """A copy of the clips at <tmp>/clips and the manifest beside it: its videos are inside its directory."""
    clips = str(tmp_path / "clips")
    shutil.copytree(synth_clips, clips)
    return clips, str(tmp_path / "clips.parquet")


def test_manifest_source_yields_the_same_clips_and_windows(synth_clips, tmp_path):
    clips, manifest = _staged(synth_clips, tmp_path)
    assert write_manifest(clips, manifest) == len(os.listdir(clips))
    from_dir, from_manifest = list_clips(clips), list_clips(manifest)
    assert len(from_dir) == len(from_manifest)
    for a, b in zip(from_dir, from_manifest):
        ca, cb = read_record(a), read_record(b)
        assert dumps(ca.to_dict()) == dumps(cb.to_dict())   # same record, video paths resolved alike
    ingest = IngestClips(load_shard_config("tiny", overrides={"window": {"frames": 16, "hop": 8}}).model_dump_json())
    keys_dir = [r["key"] for r in ingest.ingest(from_dir[:2])]
    keys_manifest = [r["key"] for r in ingest.ingest(from_manifest[:2])]
    assert keys_dir == keys_manifest and keys_dir


def test_a_manifest_away_from_its_videos_needs_absolute_paths_allowed(synth_clips, tmp_path):
    manifest = str(tmp_path / "elsewhere" / "clips.parquet")
    os.makedirs(os.path.dirname(manifest))
    write_manifest(synth_clips, manifest)   # videos outside the manifest's directory stay absolute
    ref = list_clips(manifest)[0]
    overrides = {"window": {"frames": 16, "hop": 8}}
    rows = IngestClips(load_shard_config("tiny", overrides=overrides).model_dump_json()).ingest([ref])
    assert [r["reject_reason"] for r in rows] == [Reason.VIDEO_PATH_OUTSIDE_SOURCE.value]
    allowed = load_shard_config("tiny", overrides={**overrides, "ingest": {"allow_absolute_videos": True}})
    rows = IngestClips(allowed.model_dump_json()).ingest([ref])
    assert rows and all(r["kind"] == "window" for r in rows)


def test_bad_manifest_rows_become_rejects(synth_clips, tmp_path):
    clips, manifest = _staged(synth_clips, tmp_path)
    write_manifest(clips, manifest)
    rows = pq.read_table(manifest).to_pylist()[:2]
    rows[1]["ego"] = None                     # a row missing its ego record
    pq.write_table(pa.Table.from_pylist(rows), manifest)
    ingest = IngestClips(load_shard_config("tiny", overrides={"window": {"frames": 16, "hop": 8}}).model_dump_json())
    out = [ingest.ingest([ref]) for ref in list_clips(manifest)]
    assert out[0][0]["kind"] == "window" and out[0][0]["reject_reason"] == ""
    assert len(out[1]) == 1 and out[1][0]["kind"] == "reject"
    assert out[1][0]["clip_id"] == rows[1]["clip_id"]   # named by its record, even when it is broken
    assert out[1][0]["reject_stage"] == "ingest"
    assert out[1][0]["reject_reason"] == "invalid_record" and "ego" in out[1][0]["reject_detail"]
    assert out[1][0]["location"].endswith("#row=1")


def test_unusable_sources_are_refused(tmp_path):
    with pytest.raises(SourceError, match="not a clip directory"):
        list_clips(str(tmp_path / "nope"))
    with pytest.raises(SourceError, match="no clip directories"):
        list_clips(str(tmp_path))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(SourceError, match="cannot read"):
        list_clips(str(tmp_path / "broken.parquet"))
