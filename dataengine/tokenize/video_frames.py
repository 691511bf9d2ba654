"""`frames`: video as a sequence of per-frame image grids.

Wraps a fitted `fsq_image` tokenizer (resource ``image_tokenizer``); it has no
weights of its own. Its codes have the image tokenizer's codebook but get their
own range in the shared vocabulary, so a token's modality stays a lookup.
Frame separators are the sequence composer's job, not this one's.

    frames uint8 [T,H,W,3] -> T x (h*w) codes, time-major -> [T*h*w]
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from dataengine.errors import RecipeError, RejectError
from dataengine.tokenize.base import Tokenizer, resolve_params
from dataengine.tokenize.image_fsq import FSQImageTokenizer


def _need_image_tokenizer(image_tokenizer: Any) -> FSQImageTokenizer:
    if not isinstance(image_tokenizer, FSQImageTokenizer):
        raise RecipeError(
            "frames: needs a fitted fsq_image tokenizer; pass image_tokenizer=... to "
            "fit/load (e.g. load_tokenizer(video_dir, image_tokenizer=load_tokenizer(image_dir))) "
            "and fit the image tokenizer before the video one"
        )
    return image_tokenizer


class FramesTokenizer(Tokenizer):
    """Video -> per-frame `fsq_image` codes, concatenated in time order."""

    family: ClassVar[str] = "frames"
    modality: ClassVar[str] = "video"
    weights_name: ClassVar[str | None] = None  # the weights are the image tokenizer's
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        image_tokenizer: FSQImageTokenizer,
        params: dict | None = None,
        *,
        fitted_on: dict | None = None,
    ):
        super().__init__(params, fitted_on=fitted_on)
        self.image = _need_image_tokenizer(image_tokenizer)

    def level_sizes(self) -> list[int]:
        return self.image.level_sizes()

    def to(self, device: str | torch.device) -> "FramesTokenizer":
        self.image.to(device)  # the model is the image tokenizer's (shared)
        self.device = torch.device(device)
        return self

    def tokens_per_unit(self) -> dict[str, float]:
        return {"tokens_per_frame": self.image.tokens_per_unit()["tokens_per_image"]}

    def weights_sha256(self) -> str | None:
        # No file of its own: report the image weights it encodes and decodes with.
        return self.image.weights_sha256()

    def card(self) -> dict[str, Any]:
        card = super().card()
        card["image_tokenizer"] = {
            "family": self.image.family,
            "version": self.image.version,
            "weights_sha256": self.image.weights_sha256(),
        }
        return card

    @staticmethod
    def _check(frames: Any) -> np.ndarray:
        a = np.asarray(frames)
        if a.ndim != 4 or a.shape[-1] not in (3, 4) or a.shape[0] < 1:
            raise RejectError("bad_video_shape", f"expected uint8 [T,H,W,3] with T>=1, got {a.shape}")
        return a

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, dict]:
        return self.encode_batch([x])[0]

    def encode_batch(self, xs: list) -> list[tuple[np.ndarray, dict]]:
        """All frames of all videos go through the image model in shared chunks."""
        videos = [self._check(v) for v in xs]
        all_frames = [f for v in videos for f in v]
        codes_Nn = self.image.encode_images(all_frames)
        out, start, grid = [], 0, self.image.grid
        for v in videos:
            T = len(v)
            out.append((codes_Nn[start : start + T].reshape(-1), {"frames": T, "grid": list(grid)}))
            start += T
        return out

    def decode(self, codes: np.ndarray, side: dict) -> np.ndarray:
        """-> uint8 [T, size, size, 3]."""
        T = int(side["frames"])
        grid = side.get("grid", self.image.grid)
        return self.image.decode_images(np.asarray(codes).reshape(T, -1), grid)

    def decode_batch(self, items: list[tuple[np.ndarray, dict]]) -> list[np.ndarray]:
        """All frames of all videos of one grid go through the image decoder in shared chunks."""
        out: list[np.ndarray | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, side) in enumerate(items):
            groups.setdefault(tuple(side.get("grid", self.image.grid)), []).append(i)
        for grid, idxs in groups.items():
            T = [int(items[i][1]["frames"]) for i in idxs]
            codes = np.concatenate([np.asarray(items[i][0]).reshape(t, -1) for i, t in zip(idxs, T)])
            frames = self.image.decode_images(codes, list(grid))
            for i, start, t in zip(idxs, np.cumsum([0] + T[:-1]), T):
                out[i] = frames[start : start + t]
        return out  # type: ignore[return-value]

    @classmethod
    def _from_saved(cls, card: dict, directory: Path, **resources: Any) -> "FramesTokenizer":
        image = _need_image_tokenizer(resources.get("image_tokenizer"))
        want = (card.get("image_tokenizer") or {}).get("weights_sha256")
        if want and image.weights_sha256() != want:
            raise RecipeError(
                f"frames tokenizer at {directory} was fitted with image weights {want[:12]}..., "
                f"but the image_tokenizer given has {image.weights_sha256()[:12]}...: "
                f"re-fit the video tokenizer or pass the matching image tokenizer"
            )
        return cls(image, card["params"], fitted_on=card.get("fitted_on"))

    @classmethod
    def fit(
        cls,
        samples: list,
        params: dict,
        *,
        seed: int,
        log: Callable[[str], Any] = print,
        fitted_on: dict | None = None,
        image_tokenizer: FSQImageTokenizer | None = None,
        **resources: Any,
    ) -> "FramesTokenizer":
        """No training: binds the image tokenizer and records what it was 'fitted' on."""
        p = resolve_params(cls.family, cls.defaults, params)
        image = _need_image_tokenizer(image_tokenizer)
        n_frames = int(sum(len(np.asarray(v)) for v in samples))
        log(f"[frames] bound to fsq_image {image.weights_sha256()[:12]}; "
            f"{len(samples)} videos, {n_frames} frames")
        info = {"n_samples": len(samples), "n_frames": n_frames, "seed": seed, **(fitted_on or {})}
        return cls(image, p, fitted_on=info)
