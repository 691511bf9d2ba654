"""`dataengine train` and `dataengine generate`, added to the main parser by `add_train_commands`."""
from __future__ import annotations

import argparse
from pathlib import Path

TRAIN_EXAMPLE = ("dataengine train trainer/tiny.yaml --shards out/demo --set run.steps=100\n"
                 "  dataengine train trainer/tiny.yaml --shards out/demo --resume\n"
                 "  dataengine train trainer/sft.yaml --shards out/demo --out runs/tiny-sft "
                 "--set run.init_from=runs/tiny\n"
                 "  torchrun --nproc_per_node 2 -m dataengine.train.cli train trainer/small-gpu.yaml --shards out/demo")
GENERATE_EXAMPLE = ('dataengine generate runs/tiny-sft --chat --prompt-text "Describe this image." '
                    "--prompt-file data/demo-corpus/images/cat.png --to out/generated\n"
                    '  dataengine generate runs/tiny --prompt-text "A photo of a cat." --then image --temperature 0 '
                    "--to out/generated-image")


def _cmd_train(args) -> int:
    from dataengine.train.config import load_config
    from dataengine.train.loop import train

    overrides = list(args.set or [])
    if args.out:
        overrides.append(f"run.out={args.out}")
    cfg = load_config(args.config, overrides)
    result = train(cfg, Path(args.shards), resume=args.resume, overwrite=args.overwrite)
    run = Path(result["run_dir"])
    print(f"\nrun:         {run}")
    print(f"metrics:     {run / 'metrics.jsonl'}")
    print(f"loss curve:  {run / 'loss_curve.png'}")
    print(f"checkpoint:  {run / 'checkpoints'}")
    return 0


def _cmd_generate(args) -> int:
    from dataengine.train.generate import generate

    generate(Path(args.checkpoint), Path(args.to), prompt_text=args.prompt_text,
             prompt_file=Path(args.prompt_file) if args.prompt_file else None, chat=args.chat, then=args.then,
             shards=Path(args.shards) if args.shards else None, max_new=args.max_new,
             temperature=args.temperature, top_k=args.top_k or None, seed=args.seed)
    return 0


def add_train_commands(sub) -> None:
    """Register `train` and `generate` on the `dataengine` subparsers."""
    def add(name, help_, epilog, fn):
        sp = sub.add_parser(name, help=help_, description=help_, epilog="example:\n  " + epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("train", "Pretrain or instruction-tune the compact transformer on the shards of a run "
                      "(DDP when launched by torchrun).", TRAIN_EXAMPLE, _cmd_train)
    sp.add_argument("config", help="trainer config YAML: trainer/tiny.yaml, trainer/small-gpu.yaml, trainer/sft.yaml")
    sp.add_argument("--shards", required=True, metavar="OUT", help="output folder of `dataengine run`")
    sp.add_argument("--resume", action="store_true", help="continue the run in run.out from its latest checkpoint")
    sp.add_argument("--overwrite", action="store_true", help="start over when run.out already holds checkpoints")
    sp.add_argument("--out", metavar="DIR", help="run folder (same as --set run.out=DIR)")
    sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a config value, e.g. --set run.steps=50 --set data.context=128 (repeatable)")

    sp = add("generate", "Sample a continuation from a checkpoint and decode it back to text and media.",
             GENERATE_EXAMPLE, _cmd_generate)
    sp.add_argument("checkpoint", help="run folder or checkpoints/step-NNNNNN folder")
    sp.add_argument("--to", required=True, metavar="DIR", help="where sequence.txt and decoded media go")
    sp.add_argument("--prompt-text", metavar="TEXT", help="text to continue (or the user turn with --chat)")
    sp.add_argument("--prompt-file", metavar="MEDIA", help="an image, audio or sensor file to put in the prompt")
    sp.add_argument("--chat", action="store_true", help="prompt as a user turn and let the model answer")
    sp.add_argument("--then", metavar="MODALITY", help="open a span of this modality after the prompt "
                                                       "(image, audio, video, sensor)")
    sp.add_argument("--shards", metavar="OUT", help="output folder with vocab.json and tokenizers/ "
                                                    "(default: the one the checkpoint was trained on)")
    sp.add_argument("--max-new", type=int, default=256, metavar="N", help="tokens to sample at most (default 256)")
    sp.add_argument("--temperature", type=float, default=0.8, help="0 for greedy (default 0.8)")
    sp.add_argument("--top-k", type=int, default=50, metavar="K", help="sample from the K best tokens (0: all)")
    sp.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    """`python -m dataengine.train.cli train ...` (what `torchrun -m` runs) without the rest of the CLI."""
    import sys

    from dataengine.errors import RecipeError

    p = argparse.ArgumentParser(prog="dataengine", description="The compact trainer.")
    add_train_commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = p.parse_args(argv)
    try:
        return args.fn(args)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
