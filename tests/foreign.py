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
