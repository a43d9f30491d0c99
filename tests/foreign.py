"""Models paramlab did not build, at tiny sizes: HF GPT-2 and Llama from configs (never from the hub),
a mup-package MLP, and a hand-written Transformer block."""

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

V = 64  # vocabulary


def gpt2(width, tied=True, device=None, layers=2, heads=4, dtype=None):
    cfg = transformers.GPT2Config(vocab_size=V, n_positions=16, n_embd=width, n_layer=layers, n_head=heads,
                                  tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, attn_pdrop=0.0,
                                  embd_pdrop=0.0, resid_pdrop=0.0)
    with torch.device(device or "cpu"):
        model = transformers.GPT2LMHeadModel(cfg)
    return model.to(dtype) if dtype is not None else model


def llama(width, tied=True, device=None, layers=2, heads=4, dtype=None):
    cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=width, intermediate_size=2 * width,
                                   num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                                   tie_word_embeddings=tied, max_position_embeddings=16, bos_token_id=0, eos_token_id=0,
                                   pad_token_id=0)
    with torch.device(device or "cpu"):
        model = transformers.LlamaForCausalLM(cfg)
    return model.to(dtype) if dtype is not None else model


HF = {"gpt2": gpt2, "llama": llama}


def tokens(batch=4, length=12, high=V, seed=0):
    return torch.randint(0, high, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model, idx):
    out = model(idx)
    return out.logits if hasattr(out, "logits") else out


class SdpaBlock(nn.Module):
    """A hand-written pre-LN attention LM block that calls F.scaled_dot_product_attention itself."""

    def __init__(self, width, n_heads=4, device=None):
        super().__init__()
        self.emb = nn.Embedding(V, width, device=device)
        self.ln = nn.LayerNorm(width, device=device)
        self.qkv = nn.Linear(width, 3 * width, bias=False, device=device)
        self.proj = nn.Linear(width, width, bias=False, device=device)
        self.head = nn.Linear(width, V, bias=False, device=device)
        self.n_head, self.n_embd = n_heads, width

    def forward(self, idx):  # (B, T) -> (B, T, V)
        x = self.emb(idx)
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return self.head(x)


class NanoGPT(nn.Module):
    """karpathy/nanoGPT's GPT, shaped as users have it (the same module names, fused c_attn, sdpa with its default
    scale, lm_head tied to wte), written from its README's description: pre-LN blocks, GELU MLP of 4 n_embd,
    learned positions, biases in Linears and LayerNorms (bias=True, as GPT-2).

    `attn_scale`, `branch_mult`, `input_mult` and `head_mult` are the knobs a peer's fork adds to the forward
    (None / 1.0: plain nanoGPT): q.k * attn_scale, x + branch_mult * branch(x), (wte + wpe) * input_mult,
    lm_head(head_mult * x)."""

    def __init__(self, n_embd, n_layer=2, n_head=4, block_size=16, vocab_size=V, bias=True, tied=True, device=None,
                 dtype=None):
        super().__init__()
        kw = dict(device=device, dtype=dtype)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, n_embd, **kw), wpe=nn.Embedding(block_size, n_embd, **kw),
            h=nn.ModuleList(_NanoBlock(n_embd, n_head, bias, kw) for _ in range(n_layer)),
            ln_f=nn.LayerNorm(n_embd, bias=bias, **kw)))
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False, **kw)
        if tied:
            self.transformer.wte.weight = self.lm_head.weight
        self.input_mult, self.head_mult = 1.0, 1.0

    def forward(self, idx):  # (B, T) -> (B, T, V)
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        if self.input_mult != 1.0:
            x = x * self.input_mult
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        return self.lm_head(x * self.head_mult if self.head_mult != 1.0 else x)


class _NanoAttention(nn.Module):
    def __init__(self, n_embd, n_head, bias, kw):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias, **kw)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias, **kw)
        self.n_head, self.n_embd, self.attn_scale = n_head, n_embd, None

    def forward(self, x):  # (B, T, C)
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        if self.attn_scale is None:
            y = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=True)
        else:
            y = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.attn_scale)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class _NanoBlock(nn.Module):
    def __init__(self, n_embd, n_head, bias, kw):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias, **kw)
        self.attn = _NanoAttention(n_embd, n_head, bias, kw)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias, **kw)
        self.mlp = nn.ModuleDict(dict(c_fc=nn.Linear(n_embd, 4 * n_embd, bias=bias, **kw), gelu=nn.GELU(),
                                      c_proj=nn.Linear(4 * n_embd, n_embd, bias=bias, **kw)))
        self.branch_mult = 1.0

    def forward(self, x):
        a = self.attn(self.ln_1(x))
        x = x + (a * self.branch_mult if self.branch_mult != 1.0 else a)
        h = self.mlp.c_proj(self.mlp.gelu(self.mlp.c_fc(self.ln_2(x))))
        return x + (h * self.branch_mult if self.branch_mult != 1.0 else h)
