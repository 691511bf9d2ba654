"""A decoder-only transformer over the shared vocabulary, in one readable file.

Pre-norm blocks with RMSNorm, rotary position embeddings (RoPE) taken from an
explicit position per token (positions restart at every packed document),
SwiGLU feed-forward, optional grouped-query attention, tied input/output
embeddings by default. Attention is `scaled_dot_product_attention`, either
plain causal over the whole row or block-diagonal causal per document (a
boolean mask built from the document id of each token).

Shape suffixes: B batch, T time (tokens), D model width, H query heads,
K key/value heads, E head width, F feed-forward width, V vocabulary.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dataengine.train.config import ModelConfig


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        x32 = x_BTD.float()
        norm = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * norm).type_as(x_BTD) * self.weight


def rope_angles(pos_BT: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of every (token, frequency) pair: [B, 1, T, E/2] each, float32."""
    inv_freq_E2 = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=pos_BT.device, dtype=torch.float32) / head_dim))
    ang_BTE2 = pos_BT.float()[..., None] * inv_freq_E2
    return ang_BTE2.cos()[:, None], ang_BTE2.sin()[:, None]


def apply_rope(x_BHTE: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive pairs (x0, x1) of every head by the token's angle."""
    x = x_BHTE.float().unflatten(-1, (-1, 2))                        # [B, H, T, E/2, 2]
    x0, x1 = x[..., 0], x[..., 1]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2).type_as(x_BHTE)


def document_mask(doc_BT: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask [B, 1, T, T]: True where query t may attend key s."""
    T = doc_BT.shape[1]
    same_BTT = doc_BT[:, :, None] == doc_BT[:, None, :]
    causal_TT = torch.ones(T, T, dtype=torch.bool, device=doc_BT.device).tril()
    return (same_BTT & causal_TT)[:, None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.n_kv = cfg.n_kv_heads or cfg.n_heads
        self.head_dim = cfg.d_model // cfg.n_heads
        self.theta = cfg.rope_theta
        self.dropout = cfg.dropout
        self.wq = nn.Linear(cfg.d_model, self.n_heads * self.head_dim, bias=False)
        self.wkv = nn.Linear(cfg.d_model, 2 * self.n_kv * self.head_dim, bias=False)
        self.wo = nn.Linear(self.n_heads * self.head_dim, cfg.d_model, bias=False)

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask_B1TT: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q_BHTE = self.wq(x_BTD).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k_BTKE, v_BTKE = self.wkv(x_BTD).view(B, T, 2, self.n_kv, self.head_dim).unbind(2)
        k_BKTE, v_BKTE = k_BTKE.transpose(1, 2), v_BTKE.transpose(1, 2)
        q_BHTE, k_BKTE = apply_rope(q_BHTE, cos, sin), apply_rope(k_BKTE, cos, sin)
        if self.n_kv != self.n_heads:  # grouped-query: each key/value head serves n_heads / n_kv query heads
            rep = self.n_heads // self.n_kv
            k_BKTE, v_BKTE = k_BKTE.repeat_interleave(rep, dim=1), v_BKTE.repeat_interleave(rep, dim=1)
        drop = self.dropout if self.training else 0.0
        if mask_B1TT is None:
            y_BHTE = F.scaled_dot_product_attention(q_BHTE, k_BKTE, v_BKTE, is_causal=True, dropout_p=drop)
        else:
            y_BHTE = F.scaled_dot_product_attention(q_BHTE, k_BKTE, v_BKTE, attn_mask=mask_B1TT, dropout_p=drop)
        return self.wo(y_BHTE.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = 32 * math.ceil(cfg.ffn_mult * cfg.d_model / 32)
        self.w_gate_up = nn.Linear(cfg.d_model, 2 * hidden, bias=False)
        self.w_down = nn.Linear(hidden, cfg.d_model, bias=False)

    def forward(self, x_BTD: torch.Tensor) -> torch.Tensor:
        gate_BTF, up_BTF = self.w_gate_up(x_BTD).chunk(2, dim=-1)
        return self.w_down(F.silu(gate_BTF) * up_BTF)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x_BTD, cos, sin, mask_B1TT):
        x_BTD = x_BTD + self.drop(self.attn(self.attn_norm(x_BTD), cos, sin, mask_B1TT))
        return x_BTD + self.drop(self.ffn(self.ffn_norm(x_BTD)))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size is unset; it is read from the shards' vocab.json by the trainer")
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("wo.weight") or name.endswith("w_down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, tokens_BT: torch.Tensor, pos_BT: torch.Tensor | None = None,
                doc_BT: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits [B, T, V] ([B, 1, V] with `last_only`). `pos_BT`: position of each token in its document
        (default 0..T-1); `doc_BT`: document id per token, for block-diagonal attention (None: causal)."""
        B, T = tokens_BT.shape
        if pos_BT is None:
            pos_BT = torch.arange(T, device=tokens_BT.device).expand(B, T)
        cos, sin = rope_angles(pos_BT, self.cfg.d_model // self.cfg.n_heads, self.cfg.rope_theta)
        mask_B1TT = document_mask(doc_BT) if doc_BT is not None else None
        x_BTD = self.embed(tokens_BT)
        for block in self.blocks:
            x_BTD = block(x_BTD, cos, sin, mask_B1TT)
        if last_only:
            x_BTD = x_BTD[:, -1:]
        return self.head(self.norm(x_BTD))                          # [B, T, V]

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, context: int) -> float:
        """Training FLOPs per token (PaLM appendix B, as in nanoGPT): 6N + 12 L D T."""
        n = self.num_params(non_embedding=True)
        if self.cfg.tie_embeddings:  # the tied head is still a D x V matmul per token
            n += self.cfg.d_model * self.cfg.vocab_size
        return 6 * n + 12 * self.cfg.n_layers * self.cfg.d_model * context

    @torch.no_grad()
    def generate(self, prompt_T: torch.Tensor, max_new: int, *, temperature: float = 1.0, top_k: int | None = None,
                 stop: set[int] | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample a continuation of one prompt (no KV cache: the tiny models do not need one)."""
        seq = prompt_T.clone()
        for _ in range(max_new):
            logits_V = self(seq[None], last_only=True)[0, -1].float()
            if temperature <= 0:
                nxt = logits_V.argmax()
            else:
                logits_V = logits_V / temperature
                if top_k:
                    kth = torch.topk(logits_V, min(top_k, logits_V.numel())).values[-1]
                    logits_V = logits_V.masked_fill(logits_V < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits_V, -1), 1, generator=generator)[0]
            seq = torch.cat([seq, nxt.view(1)])
            if stop and int(nxt) in stop:
                break
        return seq
