"""Checkpoints without pickle, written atomically.

    RUN/checkpoints/step-000100/
        model.safetensors      weights (a tied head is stored once, as embed.weight)
        optim.safetensors      optimizer tensors, keyed state.<param index>.<name>
        state.json             step, config, optimizer hyper-parameters, manifest fingerprint, vocab hash
        rank-<r>.json          loader state and RNG state of rank r (one file per DDP rank)
    RUN/checkpoints/latest     the name of the newest complete checkpoint

A checkpoint is written into `step-XXXXXX.tmp`, flushed, then renamed: a crash
leaves either the previous checkpoint or the new one, never a torn one; `latest`
is replaced (write + rename) only after the rename.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from dataengine.errors import RecipeError


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if getattr(model, "cfg", None) is not None and model.cfg.tie_embeddings:
        state.pop("head.weight", None)
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    allowed = {"head.weight"} if model.cfg.tie_embeddings else set()
    if set(missing) - allowed or unexpected:
        raise RecipeError(f"checkpoint does not match the model (missing {sorted(set(missing) - allowed)}, "
                          f"unexpected {sorted(unexpected)}); use the config the checkpoint was trained with")


def optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = value
    for key, value in meta["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state().tolist()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device).tolist()
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8), device)


def save_checkpoint(run_dir: Path, step: int, *, model, optimizer, state: dict, rank_state: dict,
                    rank: int = 0, world: int = 1, keep: int = 2, barrier=lambda: None) -> Path:
    """Every rank calls this (rank 0 writes the shared files); returns the final folder."""
    ckdir = Path(run_dir) / "checkpoints"
    name = f"step-{step:06d}"
    tmp, final = ckdir / (name + ".tmp"), ckdir / name
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    _write_atomic(tmp / f"rank-{rank}.json", json.dumps(rank_state, sort_keys=True))
    barrier()
    if rank == 0:
        save_file(model_tensors(model), tmp / "model.safetensors")
        opt_tensors, opt_meta = optimizer_to_files(optimizer)
        save_file(opt_tensors, tmp / "optim.safetensors")
        body = dict(state, step=step, world=world, optimizer=opt_meta)
        _write_atomic(tmp / "state.json", json.dumps(body, indent=1, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _write_atomic(ckdir / "latest", name + "\n")
        _prune(ckdir, keep, name)
    barrier()
    return final


def _prune(ckdir: Path, keep: int, newest: str) -> None:
    done = sorted(p for p in ckdir.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp"))
    for old in done[:-keep] if keep > 0 else []:
        if old.name != newest:
            shutil.rmtree(old)


def resolve(path: Path) -> Path:
    """A checkpoint folder, from itself, its run folder or its checkpoints/ folder."""
    path = Path(path)
    for candidate in (path, path / "checkpoints"):
        if (candidate / "state.json").is_file():
            return candidate
        if (candidate / "latest").is_file():
            return candidate / (candidate / "latest").read_text().strip()
    raise RecipeError(f"no checkpoint in {path}: pass a run folder (with checkpoints/latest) or a "
                      "checkpoints/step-NNNNNN folder")


def read_state(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / "state.json").read_text())


def load_weights(ckpt: Path, model) -> None:
    load_model_tensors(model, load_file(Path(ckpt) / "model.safetensors"))


def load_checkpoint(ckpt: Path, *, model, optimizer, rank: int = 0, world: int = 1) -> tuple[dict, dict]:
    """Restore model and optimizer in place; returns (state.json, this rank's loader/RNG state)."""
    ckpt = Path(ckpt)
    state = read_state(ckpt)
    if state["world"] != world:
        raise RecipeError(f"{ckpt} was written by {state['world']} processes, this run has {world}; "
                          "resume with the same number of processes")
    load_weights(ckpt, model)
    optimizer_from_files(optimizer, load_file(ckpt / "optim.safetensors"), state["optimizer"])
    return state, json.loads((ckpt / f"rank-{rank}.json").read_text())
