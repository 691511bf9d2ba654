"""dataengine: raw video, audio, images, sensor recordings and text to shared-vocabulary token shards.

``import dataengine as de`` gives the Python API (`dataengine.api`): ``de.load_recipe``, ``de.validate``,
``de.fit``, ``de.run``, ``de.read_shards``, ``de.load_tokenizer``, ``de.modality_names``. It is loaded
on first use, so ``import dataengine.decode`` (a Ray worker, a codec) does not pay for torch and Ray.
"""

__version__ = "0.1.0"
_API = ("Recipe", "RecipeError", "fit", "load_recipe", "load_tokenizer", "modality_names", "read_shards",
        "run", "validate")


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module("dataengine.api"), name)
    raise AttributeError(f"module 'dataengine' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API))
