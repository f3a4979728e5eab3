"""The world model, its latent statistics, the sampler and the tokenizer's decoder, joined: spec -> video.

    gen = Generator.from_dirs("export/world_model", "export/tokenizer", clip="models/clip")
    result = gen.generate(load_spec("examples/generation/scratch.yaml"), LocalSources(latents="latents"))
    result.write("out/scratch")        # cameras/<name>.mp4, video.mp4, latents.npy, spec.json

Batches: ``prepare`` each spec, group them by ``batch_key``, ``sample`` a group at once, ``decode`` each.
The latent statistics come with the world model (its export's ``latent_mean`` / ``latent_std``, measured on
the latents it was trained on), never a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from gaia2.generation.inputs import Geometry, Request, prepare
from gaia2.generation.sampler import Progress, Sampler, batch_key
from gaia2.generation.sources import Sources
from gaia2.generation.spec import GenerationSpec, SpecError
from gaia2.generation.video import decode_latents, write_outputs
from gaia2.tokenizer.model import Tokenizer
from gaia2.world_model.model import WorldModel


@dataclass
class Result:
    request: Request
    latents: np.ndarray          # (T, N, L, H, W) raw tokenizer latents
    frames: np.ndarray | None    # (N, F, h, w, 3) uint8, when decoded
    resolved: dict               # the resolved spec (spec.json)

    def write(self, out_dir: str) -> dict[str, str]:
        if self.frames is None:
            raise ValueError("Result.write: the latents were not decoded")
        return write_outputs(out_dir, self.frames, self.latents, self.resolved, self.request.rig)


class Generator:
    def __init__(self, world_model: WorldModel, tokenizer: Tokenizer | None, latent_mean, latent_std,
                 device: str | torch.device = "cpu", precision: str = "fp32", clip: str | None = None,
                 models: dict | None = None, factors: tuple[int, int] | None = None) -> None:
        """``latent_mean`` / ``latent_std``: the statistics the world model was trained with (scalars or per
        channel); ``clip``: a CLIP checkpoint directory for text prompts and images (loaded when first used);
        ``models``: how the models were found, recorded in every resolved spec; ``factors``: the tokenizer's
        (temporal, spatial) factors when it decodes elsewhere (``tokenizer`` None)."""
        self.device = torch.device(device)
        self.world_model = world_model.to(self.device).eval()
        self.tokenizer = tokenizer.to(self.device).eval() if tokenizer is not None else None
        cfg = world_model.cfg
        if tokenizer is not None and tokenizer.cfg.latent_dim != cfg.latent_dim:
            raise ValueError(f"Generator: the tokenizer's latents have {tokenizer.cfg.latent_dim} channels, the world "
                             f"model's {cfg.latent_dim}")
        tf, sf = factors or (8, 8)
        if tokenizer is not None:
            tf, sf = tokenizer.cfg.temporal_factor, tokenizer.cfg.spatial_factor
        c = cfg.conditioning
        self.geometry = Geometry(window=cfg.latent_steps, cameras=cfg.cameras, max_cameras=c.max_cameras,
                                 latent_dim=cfg.latent_dim, grid_hw=(cfg.height, cfg.width), max_agents=c.max_agents,
                                 clip_dim=c.clip_dim, scenario_dim=c.scenario_dim, temporal_factor=tf,
                                 frame_hw=(cfg.height * sf, cfg.width * sf))
        self.latent_mean, self.latent_std = latent_mean, latent_std
        self.sampler = Sampler(self.world_model, latent_mean, latent_std, cfg.latent_steps, self.device, precision)
        self.clip_path = clip
        self._clip: dict = {}
        self.models = dict(models or {})

    @classmethod
    def from_dirs(cls, world_model: str, tokenizer: str | None, device: str | torch.device | None = None,
                  precision: str = "fp32", clip: str | None = None, models: dict | None = None,
                  decode: bool = True) -> "Generator":
        """Export directories (``save_world_model`` / ``save_tokenizer``) -> a Generator; the statistics come from
        the world model's config.json. ``decode=False``: the tokenizer's config only (its frame geometry), not its
        weights, for a generator whose latents are decoded elsewhere."""
        from gaia2.export import read_meta
        from gaia2.tokenizer.config import TokenizerConfig
        from gaia2.tokenizer.export import FORMAT as TOKENIZER, load_tokenizer
        from gaia2.world_model.export import FORMAT, load_world_model

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        meta = read_meta(world_model, FORMAT)
        if meta.get("latent_mean") is None or meta.get("latent_std") is None:
            raise ValueError(f"world model {world_model!r}: its config.json records no latent_mean / latent_std "
                             "(export it with the training job, which stores the statistics it trained with)")
        wm = load_world_model(world_model, device)
        tok, factors = None, None
        if tokenizer and decode:
            tok = load_tokenizer(tokenizer, device)
        elif tokenizer:
            tcfg = TokenizerConfig.model_validate(read_meta(tokenizer, TOKENIZER)["config"])
            factors = (tcfg.temporal_factor, tcfg.spatial_factor)
        info = {"world_model": world_model, "tokenizer": tokenizer, **(models or {})}
        return cls(wm, tok, meta["latent_mean"], meta["latent_std"], device, precision, clip, info, factors)

    # ------------------------------------------------------------------------------------------- CLIP
    def encode_clip(self, kind: str, value) -> np.ndarray:
        """("text", prompt) or ("image", uint8 (H, W, 3)) -> (D,) unit CLIP embedding."""
        if self.clip_path is None:
            raise SpecError(f"clip.{kind}: needs a CLIP model and the generator was given none (pass --clip DIR)")
        if kind not in self._clip:
            if kind == "text":
                from gaia2.embedding.clip_text import ClipTextEmbedder
                self._clip[kind] = ClipTextEmbedder(self.clip_path, device=str(self.device))
            else:
                from gaia2.embedding.clip import ClipImageEmbedder
                self._clip[kind] = ClipImageEmbedder(self.clip_path, device=str(self.device))
        if kind == "text":
            return self._clip[kind].embed([value])[0]
        return self._clip[kind].embed(np.asarray(value)[None])[0]

    # ----------------------------------------------------------------------------------------- stages
    def prepare(self, spec: GenerationSpec, sources: Sources | None = None) -> Request:
        return prepare(spec, self.geometry, sources, self.encode_clip if self.clip_path else None)

    def sample(self, requests: Sequence[Request], progress: Progress | None = None) -> list[np.ndarray]:
        """Raw latents of requests that share a ``batch_key``, in one batch."""
        return self.sampler(list(requests), progress)

    def decode(self, latents: np.ndarray, cameras_per_call: int | None = None) -> np.ndarray:
        if self.tokenizer is None:
            raise ValueError("Generator.decode: no tokenizer was given")
        return decode_latents(self.tokenizer, latents, self.device, cameras_per_call)

    def resolved(self, request: Request) -> dict:
        """The spec as run: the input spec, the rig's cameras, the sizes, the models."""
        return {"spec": request.spec.model_dump(mode="json", exclude_none=True), "rig": request.rig.to_json(),
                **request.info, "latent_shape": [request.steps, len(request.rig.names), self.geometry.latent_dim,
                                                 *self.geometry.grid_hw],
                "frame_size": list(self.geometry.frame_hw), "models": self.models,
                "latent_mean": self.latent_mean, "latent_std": self.latent_std}

    def generate(self, spec: GenerationSpec, sources: Sources | None = None, decode: bool = True,
                 progress: Progress | None = None) -> Result:
        request = self.prepare(spec, sources)
        latents = self.sample([request], progress)[0]
        frames = self.decode(latents) if decode else None
        return Result(request, latents, frames, self.resolved(request))

    def generate_many(self, specs: Sequence[GenerationSpec], sources: Sources | None = None, batch_size: int = 4,
                      decode: bool = True) -> list[Result]:
        """Specs -> results in order, batching those that share a ``batch_key`` (up to ``batch_size`` at once)."""
        requests = [self.prepare(s, sources) for s in specs]
        latents: list[np.ndarray | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(batch_key(r), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                for i, lat in zip(chunk, self.sample([requests[i] for i in chunk])):
                    latents[i] = lat
        return [Result(r, lat, self.decode(lat) if decode else None, self.resolved(r))
                for r, lat in zip(requests, latents)]
