"""The `dataengine` command: one entry point, one subcommand per job."""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

from dataengine.errors import DiskFullError, RecipeError


def _cmd_demo_corpus(args) -> int:
    from dataengine.democorpus import write_demo_corpus

    speech = {"auto": None, "yes": True, "no": False}[args.speech]
    summary = write_demo_corpus(Path(args.out), speech=speech, seed=args.seed)
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    print(f"demo corpus written to {args.out}: {summary['files']} files, {summary['bytes'] / 2**20:.1f} MiB "
          f"({counts}); audio from {summary['audio_source']}")
    return 0


SET_HELP = ("override a recipe value by its dotted key, the value read as YAML, e.g. "
            "--set curate.filters.image_blur.min=20 --set curate.mixture.policy=unimax (repeatable)")


def _cmd_fit(args) -> int:
    from dataengine.recipe import load_recipe
    from dataengine.tokenize.fit import fit_tokenizers, fitted_state

    recipe = load_recipe(args.recipe, inputs=args.input, overrides=args.set)
    tokdir = Path(args.tokenizers) if args.tokenizers else recipe.resolve(recipe.tokenizers_dir)
    roles = list(recipe.tokenizers)
    if not args.force:
        fresh = [r for r in roles if fitted_state(recipe, tokdir, r) == "ok"]
        for r in fresh:
            print(f"{r}: already fitted with the recipe's params in {tokdir / r} (use --force to refit)")
        roles = [r for r in roles if r not in fresh]
    if roles:
        fit_tokenizers(recipe, tokdir, roles=roles)
    print(f"tokenizers in {tokdir}")
    return 0


def _cmd_run(args) -> int:
    from dataengine.pipeline.run import local_output, run_pipeline
    from dataengine.recipe import load_recipe

    from dataengine.summary import format_summary

    recipe = load_recipe(args.recipe, inputs=args.input, overrides=args.set)
    t0 = time.time()
    out = local_output(recipe, args.output)  # an s3:// OUT: the summary reads its local mirror
    run_pipeline(recipe, args.output, tokenizers_dir=Path(args.tokenizers) if args.tokenizers else None,
                 address=args.address, report=not args.no_report)
    print("\n" + format_summary(out, seconds=time.time() - t0))
    return 0


def _cmd_inspect(args) -> int:
    from dataengine.inspect import decode_to, summary_lines

    print("\n".join(summary_lines(Path(args.out))))
    if args.decode:
        to = Path(args.to) if args.to else Path(args.out) / "decoded"
        print(f"decoding {args.decode} sequences to {to}")
        decode_to(Path(args.out), args.decode, to)
    return 0


def _cmd_tokenizers_eval(args) -> int:
    from dataengine.evaluate.run import evaluate_tokenizers, format_table, write_json

    results = evaluate_tokenizers(Path(args.tokenizers), args.recipe, args.input, use_all=args.all,
                                  max_items=args.max_items)
    meta = results["meta"]
    print(f"\n{meta['split']} items of {', '.join(meta['inputs'])} ({meta['units']['eval']} units), "
          f"{meta['seconds']}s")
    print("\n".join(format_table(results)))
    print(f"\neval:      {write_json(results, Path(args.json))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dataengine",
        description="Raw video, audio, images, sensor recordings and text to shared-vocabulary token shards.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent("""\
            examples:
              dataengine demo-corpus data/demo-corpus
              dataengine fit pipelines/demo.yaml --input data/demo-corpus --tokenizers tokenizers/demo
              dataengine run pipelines/demo.yaml --input data/demo-corpus --output out/demo
              dataengine inspect out/demo --decode 6 --to out/demo/decoded
              dataengine report out/demo
              dataengine tokenizers eval --tokenizers tokenizers/demo --input data/demo-corpus --json eval.json
              dataengine train trainer/tiny.yaml --shards out/demo --set run.steps=100

            `dataengine COMMAND --help` shows each command's options and examples.
            Progress bars show on a terminal; they stay off when CI is set or stderr is not a
            terminal. DATAENGINE_PROGRESS=1 forces them on, DATAENGINE_PROGRESS=0 off.
            """),
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name, help_, epilog, fn):
        sp = sub.add_parser(name, help=help_, description=help_, epilog="example:\n  " + epilog,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(fn=fn)
        return sp

    sp = add("demo-corpus", "Write the demo corpus, made from real media that ships in installed packages.",
             "dataengine demo-corpus data/demo-corpus\n"
             "  dataengine demo-corpus data/demo-corpus-nospeech --speech no --seed 1", _cmd_demo_corpus)
    sp.add_argument("out", help="folder to write (created)")
    sp.add_argument("--speech", choices=["auto", "yes", "no"], default="auto",
                    help="speak transcripts with espeak-ng (auto: when it is installed)")
    sp.add_argument("--seed", type=int, default=0)

    sp = add("fit", "Fit every tokenizer the recipe names on a sample of the inputs.",
             "dataengine fit pipelines/demo.yaml --input data/demo-corpus --tokenizers tokenizers/demo\n"
             "  dataengine fit pipelines/demo.yaml --input data/demo-corpus --tokenizers tokenizers/demo "
             "--force --set tokenizers.text.params.vocab_size=4000", _cmd_fit)
    sp.add_argument("recipe", help="recipe YAML, e.g. pipelines/demo.yaml")
    sp.add_argument("--input", nargs="+", metavar="PATH", help="input folders (replace the recipe's sources)")
    sp.add_argument("--tokenizers", metavar="DIR", help="where to write them (default: the recipe's tokenizers_dir)")
    sp.add_argument("--force", action="store_true", help="refit tokenizers that are already fitted")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)

    sp = add("run", "Run the whole pipeline: discover, decode, tokenize, compose, write shards; "
                    "print a one-screen summary.",
             "dataengine run pipelines/demo.yaml --input data/demo-corpus --output out/demo\n"
             "  dataengine run pipelines/demo.yaml --input data/demo-corpus --output out/demo "
             "--set curate.mixture.policy=unimax --no-report\n"
             "  ray job submit --address http://head:8265 --working-dir . -- \\\n"
             "      dataengine run pipelines/demo.yaml --input /shared/corpus --output /shared/out", _cmd_run)
    sp.add_argument("recipe", help="recipe YAML, e.g. pipelines/demo.yaml")
    sp.add_argument("--input", nargs="+", metavar="PATH", help="input folders (replace the recipe's sources)")
    sp.add_argument("--output", required=True, metavar="OUT", help="output folder (replaced atomically), or s3://bucket/prefix (written locally under execution.work_dir, then uploaded with manifest.json last)")
    sp.add_argument("--tokenizers", metavar="DIR", help="fitted tokenizers (default: the recipe's tokenizers_dir; "
                                                        "missing ones are fitted first)")
    sp.add_argument("--address", metavar="RAY_ADDRESS", default=os.environ.get("RAY_ADDRESS"),
                    help="Ray cluster to use (default: start a local Ray)")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    sp.add_argument("--no-report", action="store_true",
                    help="do not write OUT/report.html (faster; `dataengine report OUT` writes it later)")

    sp = add("inspect", "Print counts of a finished run; decode sequences back to media.",
             "dataengine inspect out/demo\n"
             "  dataengine inspect out/demo --decode 6 --to out/demo/decoded", _cmd_inspect)
    sp.add_argument("out", help="output folder of `dataengine run`")
    sp.add_argument("--decode", type=int, default=0, metavar="N", help="decode N sequences (round-robin over tasks)")
    sp.add_argument("--to", metavar="DIR", help="where decoded media go (default: OUT/decoded)")

    eval_example = ("dataengine tokenizers eval --tokenizers tokenizers/demo --input data/demo-corpus "
                    "--json out/tokenizers-eval.json\n"
                    "  dataengine tokenizers eval --tokenizers tokenizers/demo --input other-corpus --all "
                    "--max-items 50 --json out/other-eval.json")
    tp = add("tokenizers", "Work with fitted tokenizers: `eval` measures them on held-out inputs.",
             eval_example, None)
    tsub = tp.add_subparsers(dest="tokenizers_command", required=True, metavar="ACTION")
    help_ = ("Measure every fitted tokenizer in DIR on held-out inputs: reconstruction vs. a same-bits "
             "baseline, codebook use, tokens per second, speed.")
    sp = tsub.add_parser("eval", help=help_, description=help_, epilog="example:\n  " + eval_example,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    sp.set_defaults(fn=_cmd_tokenizers_eval)
    sp.add_argument("--tokenizers", required=True, metavar="DIR", help="fitted tokenizers (DIR/<role>/card.yaml)")
    sp.add_argument("--input", nargs="+", required=True, metavar="PATH", help="input folders")
    sp.add_argument("--json", required=True, metavar="OUT.json", help="where to write the results")
    sp.add_argument("--recipe", metavar="RECIPE", help="recipe for decode settings and the held-out split "
                                                       "(default: pipelines/demo.yaml)")
    sp.add_argument("--all", action="store_true", help="evaluate on every input, not only the held-out "
                                                       "units (for folders fit never saw)")
    sp.add_argument("--max-items", type=int, default=200, metavar="N", help="eval items per role (default 200)")

    from dataengine.report.cli import add_report_command
    from dataengine.train.cli import add_train_commands

    add_report_command(sub)
    add_train_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DiskFullError as e:
        # the other tasks of the failed step hit the same full disk: Ray would echo each of their
        # errors when their results are freed at exit, after the one line that says it all
        os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
        print(f"error: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
