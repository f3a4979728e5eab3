"""Latent encoding: its settings (``LatentConfig``), its errors, and the checks made before any work.

Everything here runs on the driver, before Ray starts: the shard directory, the tokenizer directory
and the output directory are checked, and ``LatentInputError`` says which one cannot be used and why.
Light on purpose (no torch at import), like the stages in ``latents_stages``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationError

from gaia2 import storage
from gaia2.config.base import ConfigError, StrictModel, format_validation_error
from pipelines.shards.write import shard_path

if TYPE_CHECKING:
    from gaia2.tokenizer.config import TokenizerConfig

REPORT_FILE, ENCODE_FILE = "latents.json", "encode.json"


class LatentInputError(ValueError):
    """The shard directory, the tokenizer or the output directory cannot be used; says which and why."""


class LatentConfig(StrictModel):
    """How the encode job runs. Only ``mode`` and ``seed`` change the output; the rest is resources."""
    mode: Literal["sample", "mean"] = Field(
        "sample", description="sample: mean + exp(log_std) * eps, as the paper's world model sees latents; "
                              "mean: the posterior mean")
    seed: int = Field(0, ge=0, description="noise seed of the sample mode (with each sample's key)")
    batch_size: int = Field(4, ge=1, description="samples per encoder actor call")
    num_gpus: float = Field(0, ge=0, description="GPUs per encoder actor (0: encode on the CPU)")
    num_cpus: float = Field(0.5, gt=0, description="CPUs per encoder actor; on the CPU also its torch threads")
    concurrency: int = Field(1, ge=1, description="encoder actors")
    decode_cpus: float = Field(0.5, gt=0, description="CPUs per decode task")
    decode_batch_size: int = Field(2, ge=1, description="samples per decode task call")
    io_cpus: float = Field(0.25, gt=0, description="CPUs per read, pack and assemble task")
    read_chunk: int = Field(8, ge=1, description="samples per block coming out of a shard's read task")
    reserve_per_operator: bool = Field(
        False, description="Ray Data's per-operator resource reservation; off on small machines, where it "
                           "keeps the decode tasks from running beside the encoder actor")


def latent_config(**values: Any) -> LatentConfig:
    """``LatentConfig`` from keyword values; raises ``ConfigError`` naming each bad field."""
    try:
        return LatentConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None


@dataclass
class LatentInputs:
    """A checked shard directory and tokenizer."""
    shards_dir: str
    tokenizer_dir: str
    tokenizer: "TokenizerConfig"
    tokenizer_sha256: str
    manifest: pa.Table
    manifest_sha256: str
    shards: list[str]        # "train/shard-000000", ... (every tar present, sorted)
    window: int              # frames per sample, a multiple of the tokenizer's temporal factor
    cameras: int             # cameras of the first sample (sizes the decode tasks' memory request)



def _sha256_files(paths: list[str]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with storage.open_input(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tokenizer_sha256(directory: str) -> str:
    """The SHA-256 of a tokenizer export's config.json and weights: what encode.json's ``tokenizer_sha256`` holds."""
    from gaia2.tokenizer.export import CONFIG_FILE, WEIGHTS_FILE

    return _sha256_files([os.path.join(directory, f) for f in (CONFIG_FILE, WEIGHTS_FILE)])


def read_samples(path: str) -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A shard tar -> (key, [(member name, bytes), ...]) per sample, members in tar order.

    Members of one sample are contiguous (WebDataset grouping); a key that comes back later is an error.
    """
    seen: set[str] = set()
    current, members = None, []
    with storage.open_input(path) as f, tarfile.open(fileobj=f) as tar:
        for info in tar:
            if not info.isfile():
                continue
            key = info.name.split(".", 1)[0]
            if key != current:
                if current is not None:
                    yield current, members
                if key in seen:
                    raise ValueError(f"{path}: members of sample {key!r} are not contiguous")
                seen.add(key)
                current, members = key, []
            members.append((info.name, tar.extractfile(info).read()))
    if current is not None:
        yield current, members


def _tokenizer_config(path: str) -> "TokenizerConfig":
    from gaia2.tokenizer.config import TokenizerConfig
    from gaia2.tokenizer.export import WEIGHTS_FILE, read_tokenizer_meta

    if not os.path.isdir(path):
        raise LatentInputError(f"tokenizer {path!r}: not a directory (expected one written by save_tokenizer)")
    try:
        meta = read_tokenizer_meta(path)
        cfg = TokenizerConfig.model_validate(meta.get("config"))
    except ValidationError as err:
        raise LatentInputError(f"tokenizer {path!r}: config.json: {format_validation_error(err, 'config.')}") from None
    except (FileNotFoundError, ValueError) as err:   # these name the path and what is wrong
        raise LatentInputError(str(err)) from None
    if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)):
        raise LatentInputError(f"tokenizer {path!r}: no {WEIGHTS_FILE}")
    return cfg


def _first_sample(shards_dir: str, shard: str) -> tuple[str, dict]:
    """The key and json of the first sample of ``shard``."""
    for key, members in read_samples(shard_path(shards_dir, shard)):
        for name, data in members:
            if name == f"{key}.json":
                return key, json.loads(data)
        raise LatentInputError(f"shards {shards_dir!r}: sample {key} in {shard} has no {key}.json")
    raise LatentInputError(f"shards {shards_dir!r}: {shard}.tar holds no samples, though the manifest lists some")


def check_inputs(shards_dir: str, tokenizer_dir: str) -> LatentInputs:
    """Check everything that can be checked before any work; raises ``LatentInputError``."""
    shards_dir, tokenizer_dir = storage.absolute(shards_dir), os.path.abspath(tokenizer_dir)
    manifest_path = storage.join(shards_dir, "manifest.parquet")
    try:
        has_manifest = storage.is_file(manifest_path)
        shards = sorted(rel[: -len(".tar")] for rel in storage.list_files(shards_dir)
                        if rel.count("/") == 1 and rel.split("/")[1].startswith("shard-") and rel.endswith(".tar"))
    except OSError as err:   # no such bucket, no credentials
        raise LatentInputError(f"shards {storage.redact(shards_dir)!r}: cannot be read ({err})") from None
    if not has_manifest and not storage.is_dir(shards_dir) and not shards:
        raise LatentInputError(f"shards {storage.redact(shards_dir)!r}: not a directory (expected a shard build: "
                               f"train/, val/, manifest.parquet)")
    if not has_manifest:
        raise LatentInputError(f"shards {storage.redact(shards_dir)!r}: no manifest.parquet (not a finished shard build)")
    with storage.open_input(manifest_path) as f:
        manifest = pq.read_table(f)
    if manifest.num_rows == 0:
        raise LatentInputError(f"shards {shards_dir!r}: the manifest lists no samples")
    missing = sorted(set(manifest.column("shard").to_pylist()) - set(shards))
    if missing:
        raise LatentInputError(f"shards {shards_dir!r}: the manifest lists shards with no tar: {missing[:5]}")
    tokenizer = _tokenizer_config(tokenizer_dir)
    key, meta = _first_sample(shards_dir, manifest.column("shard")[0].as_py())
    window = len(meta["timestamps"])
    factor = tokenizer.temporal_factor
    if window < factor or window % factor:
        raise LatentInputError(
            f"window length {window} frames (sample {key}) is not a multiple of the tokenizer's temporal factor "
            f"{factor}: the encoder maps each {factor} frames to one latent; cut the shards with window.frames "
            f"a multiple of {factor}")
    return LatentInputs(
        shards_dir=shards_dir, tokenizer_dir=tokenizer_dir, tokenizer=tokenizer,
        tokenizer_sha256=tokenizer_sha256(tokenizer_dir),
        manifest=manifest, manifest_sha256=_sha256_files([manifest_path]), shards=shards, window=window,
        cameras=len(meta["cameras"]))


def fingerprint(inputs: LatentInputs, cfg: LatentConfig) -> dict:
    """What makes the output what it is: the inputs' hashes and the settings that change the latents."""
    return {"manifest_sha256": inputs.manifest_sha256, "tokenizer_sha256": inputs.tokenizer_sha256,
            "mode": cfg.mode, "seed": cfg.seed}


def check_output(out_dir: str, inputs: LatentInputs, cfg: LatentConfig) -> bool:
    """True if ``out_dir`` holds (part of) this very encoding, to resume; raises if it holds another one."""
    try:
        previous = json.loads(storage.read_bytes(storage.join(out_dir, ENCODE_FILE)))
    except FileNotFoundError:
        return False
    ours = fingerprint(inputs, cfg)
    differ = sorted(k for k in ours if previous.get(k) != ours[k])
    if differ:
        raise LatentInputError(f"{storage.redact(out_dir)} holds latents of other inputs or settings ({', '.join(differ)} "
                               f"differ); choose a new output directory or delete it")
    return True


