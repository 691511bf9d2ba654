import torch

from dataengine.train.config import ModelConfig
from dataengine.train.metrics import masked_mean, modality_report, modality_sums, token_losses
from dataengine.train.model import Transformer, document_mask


def _model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=4, vocab_size=50, **kw)
    return Transformer(cfg).eval()


def test_block_diagonal_attention_equals_each_document_alone():
    model = _model(n_kv_heads=2)
    g = torch.Generator().manual_seed(1)
    docs = [torch.randint(0, 50, (n,), generator=g) for n in (5, 9, 2)]
    tokens = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    doc = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)])[None]
    with torch.no_grad():
        packed = model(tokens, pos, doc)[0]
        alone = torch.cat([model(d[None])[0] for d in docs])   # dense causal reference, one document at a time
        leaky = model(tokens, pos, None)[0]                     # plain causal over the row
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(leaky[5:], alone[5:], atol=1e-3)  # without the mask, documents see each other


def test_document_mask_shape_and_content():
    m = document_mask(torch.tensor([[0, 0, 1, 1, 1]]))[0, 0]
    assert m.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 1, 1, 1]]


def test_causal_and_gqa_shapes():
    model = _model(n_kv_heads=1)
    assert model.blocks[0].attn.wkv.out_features == 2 * 8  # one key/value head of width 8
    x = torch.randint(0, 50, (2, 12))
    with torch.no_grad():
        a = model(x)
        y = x.clone()
        y[:, 8:] = (y[:, 8:] + 1) % 50                          # change the future only
        b = model(y)
    assert a.shape == (2, 12, 50)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert model.head.weight is model.embed.weight              # tied by default


def test_loss_mean_over_targets_and_safe_without_targets():
    model = _model().train()
    x = torch.randint(0, 50, (2, 6))
    labels = torch.randint(0, 50, (2, 6))
    tl = token_losses(model(x), labels)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 2:4] = True
    mask[1, 5] = True
    loss = masked_mean(tl, mask)
    torch.testing.assert_close(loss, tl[mask].mean())
    empty = masked_mean(token_losses(model(x), labels), torch.zeros(2, 6, dtype=torch.bool))
    empty.backward()
    assert empty.item() == 0.0
    assert all(torch.isfinite(p.grad).all() and not p.grad.any() for p in model.parameters())


def test_per_modality_sums():
    loss = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    mask = torch.tensor([[True, True, False, True]])
    mod = torch.tensor([[1, 2, 2, 1]])
    rep = modality_report(modality_sums(loss, mask, mod))
    assert rep == {"text": 2.5, "image": 2.0}


def test_generate_samples_from_the_last_position_and_stops():
    model = _model()
    x = torch.randint(0, 50, (1, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(x, last_only=True)[:, 0], model(x)[:, -1])
        greedy = model.generate(x[0], 5, temperature=0)
        first = int(model(x)[0, -1].argmax())
        stopped = model.generate(x[0], 5, temperature=0, stop={first})
    assert greedy.shape == (12,) and torch.equal(greedy[:7], x[0]) and int(greedy[7]) == first
    assert stopped.shape == (8,)
