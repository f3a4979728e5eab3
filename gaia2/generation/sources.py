"""Where a spec's references come from: shard samples, latents files, previous generations, CLIP images.

A spec only names things (``{sample: KEY}``, ``{latents: ctx.npy}``, ``{generation: run1}``, ``image:
scene.png``); a ``Sources`` object decides what those names may open. ``LocalSources`` is the command line's:
samples from a latent-shard directory (``gaia2 encode-latents``' layout: ``index/<split>-shard-*.json`` listing
the keys of ``<split>/shard-*.tar``), files relative to the spec's folder. A service gives its own, which
never opens a path a client chose.
"""

from __future__ import annotations

import glob
import io
import json
import os
import tarfile
from dataclasses import dataclass

import numpy as np

from gaia2.generation.spec import SpecError

LATENT_MEMBERS = ("json", "latents.npy", "boxes.npy", "boxes_valid.npy", "clip.npy")
MAX_NPY_BYTES = 1 << 30


@dataclass
class SourceSample:
    """A real sample of the latent shards: its json and arrays (as ``world_model_sample`` takes them)."""
    key: str
    meta: dict
    latents: np.ndarray        # (T, N, L, H, W) raw tokenizer latents, every camera of the sample
    boxes: np.ndarray          # (frames, N, A, 13)
    boxes_valid: np.ndarray    # (frames, N, A)
    clip: np.ndarray           # (N, D)
    scenario: np.ndarray | None = None   # (D_s,) when a scenario table knows the sample


@dataclass
class SourceGeneration:
    """A previous generation: its raw latents (T, N, L, H, W) and its resolved spec (``spec.json``)."""
    ref: str
    latents: np.ndarray
    resolved: dict


class Sources:
    """Resolves a spec's references; this base resolves none (each method names what is missing)."""

    def sample(self, key: str) -> SourceSample:
        raise SpecError(f"sample {key!r}: this generator was given no latent shards to take samples from")

    def latents(self, ref: str) -> np.ndarray:
        raise SpecError(f"latents {ref!r}: latents files are not accepted here")

    def generation(self, ref: str) -> SourceGeneration:
        raise SpecError(f"generation {ref!r}: previous generations are not available here")

    def image(self, ref: str) -> np.ndarray:
        raise SpecError(f"clip.image {ref!r}: image files are not accepted here")


def load_npy(data: bytes, what: str) -> np.ndarray:
    """``.npy`` bytes -> array, or a ``SpecError`` naming ``what``. The header is read first: a pickled (object)
    array, an ``.npz`` archive, or a shape whose size the bytes do not hold is refused before anything is
    allocated."""
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read:
            raise ValueError(f".npy format version {version} is not read here (1.0 or 2.0)")
        shape, _, dtype = read[version](buf, max_header_size=10_000)
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise SpecError(f"{what}: not a readable .npy array ({err})") from None
    if dtype.hasobject:
        raise SpecError(f"{what}: an array of Python objects (pickles are not loaded)")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count < 0 or count * dtype.itemsize != len(data) - buf.tell():
        raise SpecError(f"{what}: its header says shape {tuple(shape)} of {dtype} ({count * dtype.itemsize} bytes), "
                        f"the file holds {len(data) - buf.tell()} bytes of data")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise SpecError(f"{what}: not a readable .npy array ({err})") from None
    if not isinstance(arr, np.ndarray):
        raise SpecError(f"{what}: not a single .npy array")
    return arr


def check_latents(arr: np.ndarray, what: str) -> np.ndarray:
    """A latents array (T, N, L, H, W), finite floats -> float32."""
    if arr.ndim != 5 or min(arr.shape) < 1:
        raise SpecError(f"{what}: latents must be (T, N, L, H, W), got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise SpecError(f"{what}: latents must be floating point, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise SpecError(f"{what}: latents contain NaN or infinity")
    return arr.astype(np.float32, copy=False)


class LatentShards:
    """Samples of a latent-shard directory by key (an index of key -> tar file, members read on demand)."""

    def __init__(self, root: str, scenario=None) -> None:
        """scenario: optional callable key -> (D_s,) vector or None (a scenario table's lookup)."""
        self.root = root
        self.scenario = scenario
        self._where: dict[str, str] = {}
        for index in sorted(glob.glob(os.path.join(root, "index", "*.json"))):
            split, _, shard = os.path.basename(index)[:-len(".json")].partition("-")
            tar = os.path.join(root, split, f"{shard}.tar")
            with open(index) as f:
                for row in json.load(f).get("samples", []):
                    self._where[str(row["key"])] = tar
        if not self._where:
            raise SpecError(f"latents {root!r}: no latent shards (expected index/*.json from gaia2 encode-latents)")

    def keys(self, split: str | None = None) -> list[str]:
        return sorted(k for k, tar in self._where.items()
                      if split is None or os.path.basename(os.path.dirname(tar)) == split)

    def resolve(self, key: str) -> str:
        """A key, or ``@SPLIT:I``: the I-th key (sorted) of split SPLIT (``@val:0``, for examples that must work
        on any build)."""
        if not key.startswith("@"):
            return key
        split, _, index = key[1:].partition(":")
        keys = self.keys(split)
        if not index.isdigit() or int(index) >= len(keys):
            raise SpecError(f"sample {key!r}: expected @SPLIT:INDEX with INDEX below {len(keys)} "
                            f"(the samples of split {split!r} in {self.root!r})")
        return keys[int(index)]

    def __call__(self, key: str) -> SourceSample:
        key = self.resolve(key)
        tar = self._where.get(key)
        if tar is None:
            raise SpecError(f"sample {key!r}: not in the latent shards at {self.root!r}")
        members = {}
        with tarfile.open(tar) as t:
            for m in LATENT_MEMBERS:
                info = t.getmember(f"{key}.{m}")
                members[m] = t.extractfile(info).read()
        meta = json.loads(members["json"])
        arrays = {m: load_npy(members[m], f"sample {key!r} {m}") for m in LATENT_MEMBERS[1:]}
        return SourceSample(key, meta, arrays["latents.npy"], arrays["boxes.npy"], arrays["boxes_valid.npy"],
                            arrays["clip.npy"], self.scenario(key) if self.scenario else None)


class LocalSources(Sources):
    """The command line's sources: shard samples from ``latents`` (a latent-shard directory), files relative to
    ``base_dir`` (the spec's folder)."""

    def __init__(self, latents: str | None = None, base_dir: str = ".", scenario=None) -> None:
        self.shards = LatentShards(latents, scenario) if latents else None
        self.base_dir = base_dir

    def _path(self, ref: str) -> str:
        return ref if os.path.isabs(ref) else os.path.join(self.base_dir, ref)

    def sample(self, key: str) -> SourceSample:
        if self.shards is None:
            return super().sample(key)
        return self.shards(key)

    def latents(self, ref: str) -> np.ndarray:
        path = self._path(ref)
        try:
            if os.path.getsize(path) > MAX_NPY_BYTES:
                raise SpecError(f"latents {ref!r}: larger than {MAX_NPY_BYTES} bytes")
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise SpecError(f"latents {ref!r}: cannot read ({err.strerror})") from None
        return check_latents(load_npy(data, f"latents {ref!r}"), f"latents {ref!r}")

    def generation(self, ref: str) -> SourceGeneration:
        folder = self._path(ref)
        try:
            with open(os.path.join(folder, "spec.json")) as f:
                resolved = json.load(f)
        except (OSError, ValueError) as err:
            raise SpecError(f"generation {ref!r}: no readable spec.json ({err})") from None
        return SourceGeneration(ref, self.latents(os.path.join(folder, "latents.npy")), resolved)

    def image(self, ref: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(self._path(ref)) as img:
                return np.array(img.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise SpecError(f"clip.image {ref!r}: cannot read the image ({err})") from None
