"""Recipes: typed, validated YAML that the engine compiles into a Ray pipeline.

Every key is checked before any work starts. An unknown key, a wrong type or a
bad value stops the run with a message that names the key, what is allowed and,
for a typo, the closest valid key. Relative paths in a recipe are resolved
against the recipe file's folder, so a recipe runs the same from any cwd.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dataengine.compose.tasks import ComposeConfig
from dataengine.curate.dedup import DedupConfig
from dataengine.curate.mixture import MixtureConfig
from dataengine import config, modalities
from dataengine.errors import RecipeError

TOKENIZER_ROLES = modalities.names()  # a recipe's `tokenizers.<role>`: one per registered modality


@dataclass
class Source:
    name: str
    path: str


@dataclass
class DecodeBudget:
    """Limits per sample: each is decoded in a watched child process of its worker (pipeline/budget.py);
    one over a limit is killed and rejected (over_wall_budget / over_cpu_budget / over_memory_budget)."""

    wall_s: float = 60.0     # every legitimate demo item decodes in under 2 s on 2 cores; 60 s is a stall
    cpu_s: float = 120.0     # over all the decoder's threads (FFmpeg decodes 4K with several)
    memory_mb: int = 2048    # resident growth over the idle decoder; a 40 MP photo needs ~0.6 GB
    watch: bool = True       # False: decode inside the worker (no budgets, no child process; for benches)


# `decode:` shared limits, then one section per modality (its module's `decode_config`: decode.image, ...)
Decode = dataclasses.make_dataclass("Decode", [
    ("max_file_bytes", int, field(default=256 * 2**20)),
    ("budget", DecodeBudget, field(default_factory=DecodeBudget)),
] + [(m.name, m.decode_config, field(default_factory=m.decode_config))
     for m in modalities.registry().values() if m.decode_config is not None])
Decode.__module__ = __name__
Decode.__doc__ = "The recipe's `decode:` section: file size cap, per-sample budgets, one section per modality."


@dataclass
class TokenizerSpec:
    family: str
    params: dict = field(default_factory=dict)


@dataclass
class Fit:
    max_items: int = 400   # per modality: a sample of the corpus is enough to fit
    min_items: int = 1     # fewer decoded items than this for a modality is a recipe error
    holdout_fraction: float = 0.1  # sample groups kept out of fitting, by a seeded hash of their id, for eval


@dataclass
class Curate:
    # {stat: {min, max} | {allow: [...]} | {equals: bool}}; stats are listed in dataengine/curate/stats.py
    filters: dict = field(default_factory=dict)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    mixture: MixtureConfig = field(default_factory=MixtureConfig)
    # decode each item's codes to measure reconstruction error (token_recon_mse): one extra decode per item
    token_recon: bool = True


@dataclass
class Output:
    shard_rows: int = 4096       # sequences per shard
    val_fraction: float = 0.02   # held out by a hash of the sequence id (stable as the corpus grows)
    webdataset: bool = True
    parquet_compression: str = "zstd"


@dataclass
class Execution:
    decode_batch: int = 8         # units decoded together inside a worker (their arrays are held at once)
    tokenize_batch: int = 16      # decoded items per tokenizer call (batched encoding)
    # workers (Ray actors that decode, tokenize and write parts); 0 = one per tokenize_num_cpus CPUs, all
    # started up front: they are all the compute there is (fewer than CPUs leave cores idle). A GPU present
    # is shared by them (fractional num_gpus)
    tokenize_actors: int = 0
    tokenize_num_cpus: float = 1.0  # per worker
    # sample groups per work item: one candidate part, written by the worker, the unit of resume; 0 = about
    # 64 items of 8..1024 groups (pipeline/items.py), decided by the number of groups alone, never the cluster
    item_units: int = 0
    max_unit_crashes: int = 2     # a sample that kills its worker this many times is rejected (decoder_/tokenizer_crashed)
    # when OUT is on object storage (s3://...): the folder that holds the run's local mirror of OUT and its work
    # files, then uploaded (dataengine/publish.py); on a cluster one every node sees. "" = ~/.cache/dataengine/outputs
    work_dir: str = ""


@dataclass
class Recipe:
    name: str
    sources: list[Source]
    tokenizers: dict[str, TokenizerSpec]
    tokenizers_dir: str = "tokenizers"
    seed: int = 0
    decode: Decode = field(default_factory=Decode)
    fit: Fit = field(default_factory=Fit)
    compose: ComposeConfig = field(default_factory=ComposeConfig)
    curate: Curate = field(default_factory=Curate)
    output: Output = field(default_factory=Output)
    execution: Execution = field(default_factory=Execution)
    base_dir: str = field(default=".", metadata={"internal": True})

    def resolve(self, path: str | Path) -> Path | str:
        """A local path made absolute (relative to the recipe's folder); a URI (s3://..., file://...)
        unchanged, as a str: `dataengine.storage` reads it."""
        if "://" in str(path):
            return str(path)
        p = Path(path).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d

    @property
    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


def source_roots(recipe: Recipe) -> list[tuple[str, Path | str]]:
    """(name, folder or URI) of every source; a RecipeError naming the fix when one is not there."""
    from dataengine import storage

    opts = storage.options_from_env()
    sources = [(s.name, recipe.resolve(s.path)) for s in recipe.sources]
    missing = []
    for _, p in sources:
        try:
            if not storage.is_dir(p, opts):
                missing.append(str(p))
        except OSError as e:  # a bad endpoint, bucket or credentials
            missing.append(f"{p} ({type(e).__name__}: {e})")
    if missing:
        raise RecipeError(f"input folder(s) not found: {missing}; pass existing folders or s3://bucket/prefix "
                          "with --input (S3 reads AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                          "AWS_REGION)")
    return sources


def load_recipe(path: str | Path, *, inputs: list[str] | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe; `inputs` replace its sources (the CLI's --input), `overrides` are
    `dotted.key=value` strings (the CLI's --set; the value is read as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe {path} not found; pass a YAML file such as pipelines/demo.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {e}") from None
    for item in overrides or []:
        data = config.override(data or {}, item)
    if inputs:
        data = dict(data or {})
        data["sources"] = [{"name": _source_name(p, i), "path": p if "://" in p else str(Path(p).resolve())}
                           for i, p in enumerate(inputs)]
    recipe = parse_recipe(data, base_dir=path.resolve().parent, where=str(path))
    return recipe


def parse_recipe(data, *, base_dir: Path | str = ".", where: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a YAML mapping with keys {config.fields_of(Recipe)}")
    recipe = config.build(Recipe, {**data, "base_dir": str(base_dir)}, where)
    _check_semantics(recipe, where)
    return recipe


def _source_name(path: str, i: int) -> str:
    if "://" in path:  # s3://bucket/prefix/corpus -> "corpus"
        from pathlib import PurePosixPath

        return PurePosixPath(path.split("://", 1)[1].rstrip("/")).name or f"input{i}"
    name = Path(path).resolve().name or f"input{i}"
    return name


def _check_semantics(r: Recipe, where: str) -> None:
    from dataengine.tokenize.registry import get_family  # local: keeps `recipe` import light

    if not r.sources:
        raise RecipeError(f"{where}: `sources` is empty; list at least one {{name, path}} or pass --input PATH")
    names = [s.name for s in r.sources]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: source names must be unique, got {names}")
    for role, spec in r.tokenizers.items():
        if role not in TOKENIZER_ROLES:
            close = difflib.get_close_matches(role, TOKENIZER_ROLES, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"{where}.tokenizers: unknown role {role!r}{hint} Allowed: {list(TOKENIZER_ROLES)} "
                              f"(a plugin modality registers through the {modalities.GROUP!r} entry point group)")
        fam = get_family(spec.family)
        if fam.modality != role:
            raise RecipeError(
                f"{where}.tokenizers.{role}: family {spec.family!r} tokenizes {fam.modality}, not {role}"
            )
        for need in modalities.get(role).needs:
            if need not in r.tokenizers:
                raise RecipeError(f"{where}.tokenizers.{role}: {role} tokenizers are built on the {need} "
                                  f"tokenizer; add `tokenizers.{need}` too")
    if modalities.TEXT not in r.tokenizers:
        raise RecipeError(f"{where}.tokenizers: a `text` tokenizer is required (captions, labels, chat)")
    for m in modalities.registry().values():
        if m.check_recipe is not None:
            m.check_recipe(r, where)
    if not 0.0 <= r.fit.holdout_fraction < 1.0:
        raise RecipeError(f"{where}.fit.holdout_fraction: expected a number in [0, 1), got {r.fit.holdout_fraction}")
    if not 0.0 <= r.output.val_fraction < 1.0:
        raise RecipeError(f"{where}.output.val_fraction: expected a number in [0, 1), got {r.output.val_fraction}")
    if not isinstance(r.execution.tokenize_actors, int) or r.execution.tokenize_actors < 0:
        raise RecipeError(f"{where}.execution.tokenize_actors: expected an integer >= 0 (0 = one per "
                          f"tokenize_num_cpus CPUs), got {r.execution.tokenize_actors!r}")
    b = r.decode.budget
    if not (b.wall_s > 0 and b.cpu_s > 0 and b.memory_mb >= 16):
        raise RecipeError(f"{where}.decode.budget: wall_s and cpu_s must be positive seconds and memory_mb at least "
                          f"16 (MiB a sample may add to the decoder), got wall_s={b.wall_s} cpu_s={b.cpu_s} "
                          f"memory_mb={b.memory_mb}; set watch: false to decode without budgets")
    if not 1 <= r.execution.max_unit_crashes <= 100:
        raise RecipeError(f"{where}.execution.max_unit_crashes: expected an integer in 1..100 (2 tolerates one "
                          f"unrelated worker death per sample), got {r.execution.max_unit_crashes}")
    if not isinstance(r.execution.item_units, int) or r.execution.item_units < 0:
        raise RecipeError(f"{where}.execution.item_units: expected an integer >= 0 (sample groups per work item; "
                          f"0 picks about 64 items), got {r.execution.item_units!r}")
    if r.compose.pack_length > 0 and r.curate.mixture.policy != "none":
        raise RecipeError(f"{where}: compose.pack_length packs rows of several source/kind groups into one, so "
                          f"the trainer cannot follow a mixture plan (policy {r.curate.mixture.policy!r}) over "
                          "them; set compose.pack_length: 0 (the trainer packs at load time) or "
                          "curate.mixture.policy: none")
    if r.output.shard_rows < 1:
        raise RecipeError(f"{where}.output.shard_rows: expected a positive integer")
    from dataengine.curate.filters import parse_filters
    from dataengine.curate.mixture import validate_mixture
    from dataengine.curate.stats import STAT_FIELDS

    parse_filters(r.curate.filters, STAT_FIELDS, where=f"{where}.curate.filters")
    try:
        validate_mixture(r.curate.mixture)
    except RecipeError as e:
        raise RecipeError(f"{where}: curate.{e}") from None
    kinds = modalities.kinds() + ("*",)
    for key in r.curate.mixture.weights:  # the groups themselves are only known after tokenizing
        src, _, kind = key.partition("/")
        if src not in names + ["*"] or kind not in kinds:
            raise RecipeError(f"{where}.curate.mixture.weights: key {key!r} is not SOURCE/KIND with SOURCE in "
                              f"{names + ['*']} and KIND in {list(kinds)}")
    r.compose.validate(where=f"{where}.compose")
    if r.output.parquet_compression not in ("zstd", "snappy", "gzip", "none"):
        raise RecipeError(f"{where}.output.parquet_compression: use one of zstd, snappy, gzip, none")
