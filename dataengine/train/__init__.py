"""The compact trainer: a decoder-only transformer pretrained and instruction-tuned on the shards.

    config.py      typed config (YAML + --set overrides)
    model.py       the transformer (RoPE, RMSNorm, SwiGLU, GQA, block-diagonal attention)
    source.py      random access to the sequences of a split (Parquet or WebDataset)
    pack.py        packing into rows with document boundaries; loss masks
    loader.py      seeded permutation sliced by rank and worker; exact loader state
    loop.py        the training loop (single process or DDP under torchrun)
    checkpoint.py  safetensors + JSON checkpoints, written atomically
    metrics.py     per-modality loss, tokens/s, MFU, metrics.jsonl, loss-curve PNG
    generate.py    sampling, decoded back to media
    cli.py         `dataengine train` and `dataengine generate`
"""
