"""The transformer of the torch tier: one backbone, three uses.

What it teaches: the denoiser of masked diffusion is an ordinary transformer whose
attention sees the whole sequence (no causal mask). Flip one flag, `causal=True`, and
the same backbone is the autoregressive (AR) twin that diffusion is measured against.
Between the two, `block_len=b` makes it a block-diffusion denoiser (processes/block.py):
it reads the noisy sequence and the clean one side by side, and attention is cut in blocks
of b positions, so that a noisy block sees itself and the clean blocks before it.

    from torch_version.model import ModelConfig, Transformer
    model = Transformer(ModelConfig(vocab_size=28, n_out=27, block_size=16))
    logits = model(xt)                      # (B, T) ids -> (B, T, n_out) float logits

Incremental decoding for the AR twin (used by sample.py): keys and values of the tokens
already seen are kept in a cache, so each new token costs one position, not the prefix.

    cache = model.new_kv_cache(batch, device)
    logits = model(prefix, kv_cache=cache, start_pos=0)       # (B, P, n_out)
    logits = model(next_ids, kv_cache=cache, start_pos=P)     # (B, 1, n_out), same values
                                                              # as the uncached forward
The block-diffusion denoiser uses the same cache for the clean blocks already written; a block
passed with kv_cache sees the cache and itself (and a run of clean blocks, block-causally).

    logits = model(xt, x0=x0)               # training and scoring: (B, T) noisy, (B, T) clean

Changes from pure: the denoiser is a transformer written with torch (autograd, not
hand-written backprop). Where pure's MLP reads the whole flattened name at once, here every
position reads the others through attention, so positions must be given explicitly (rotary
and a learned table, see Transformer). Checkpoints are written and read by engine/checkpoints.py.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    vocab_size: int          # input tokens, MASK included (the diffusion model reads MASK)
    n_out: int               # output classes: the real tokens; MASK is never predicted (SPEC 3)
    block_size: int          # longest sequence the model reads
    n_layer: int = 4         # transformer blocks
    n_head: int = 4          # attention heads per block
    n_embd: int = 128        # width of the residual stream
    dropout: float = 0.0     # dropout on attention weights and on each residual branch
    causal: bool = False     # False: the diffusion denoiser; True: the autoregressive twin
    positions: str = "both"  # "rope" (rotary, relative), "learned" (a table, absolute) or "both"
    activation: str = "gelu"  # MLP nonlinearity: "gelu" or "relu2" (ReLU squared)
    time_input: bool = False  # the denoiser is also told t (uniform and Gaussian noise need it; MASK does not)
    vector_input: int = 0     # 0: the input is token ids; K > 0: a K-vector per position (Gaussian noise)
    block_len: int = 0        # block diffusion: positions per block (0: off); see block_diffusion_mask


ROPE_BASE = 10000.0    # rotary wavelengths run from 2 pi to about 2 pi * ROPE_BASE positions
TIME_FREQUENCIES = 16  # time_input: t is read through sin and cos of t at 16 frequencies, 1 to about 1,000


# ---------------------------------------------------------------- positions
def rotary_tables(block_size, head_dim):
    """cos and sin of the rotary angles, (block_size, head_dim // 2) each.
    Pair i of every head turns by position * ROPE_BASE^(-2i / head_dim)."""
    freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angle = torch.arange(block_size, dtype=torch.float64)[:, None] * freq[None, :]
    return angle.cos().float(), angle.sin().float()


def apply_rotary(x, cos, sin):
    """Rotate each pair (x1, x2) of x (..., T, hs) by its position's angle (cos, sin: (T, hs/2)).
    q . k then depends on the positions only through their difference: relative positions.
    The tables are cast to x's dtype, so under bf16 autocast the rotation runs in bf16 too."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def time_features(t):
    """t (B,) in [0, 1] -> (B, 2 * TIME_FREQUENCIES): sin and cos of t * 2^i for i = 0..15, so that
    a linear layer can tell t = 0.001 from t = 0.002 as easily as 0.5 from 0.6 (a raw t could not)."""
    freq = 2.0 ** torch.arange(TIME_FREQUENCIES, device=t.device, dtype=torch.float32)
    angle = t.float()[:, None] * freq[None, :]
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


def block_diffusion_mask(T, block_len, device=None):
    """Who may attend to whom when a block-diffusion denoiser reads [xt, x0] (2T positions, the noisy
    copy first): (2T, 2T) bool, True where query i may see key j. With blocks of block_len positions,
    a noisy block sees itself and the clean blocks before it, never its own clean copy (that would
    hand it the answer); a clean block sees the clean blocks up to its own, never any noise. So the
    clean half is an AR model over blocks, and its keys are what a KV cache holds when sampling.
        block_len = 1: the noisy half predicts each position from the clean ones before it (AR);
        block_len = T: one block, no clean key is ever seen: the masked denoiser."""
    block = torch.arange(T, device=device) // block_len
    same, before = block[:, None] == block[None, :], block[:, None] > block[None, :]
    noisy = torch.cat([same, before], dim=1)                        # (T, 2T): its own block of noise; earlier clean blocks
    clean = torch.cat([torch.zeros_like(same), same | before], dim=1)  # (T, 2T): clean blocks up to its own
    return torch.cat([noisy, clean], dim=0)


def block_cache_mask(start_pos, T, block_len, device=None):
    """Who may attend to whom when a block-diffusion denoiser reads T positions, start_pos onwards,
    with a KV cache that holds the clean positions before them: (T, start_pos + T) bool. A query
    sees every key of the blocks before its own (the cache) and of its own block: a noisy block
    reads itself both ways, and a run of clean blocks read at once (a prompt) is block-causal,
    as the clean half of block_diffusion_mask."""
    keys, queries = torch.arange(start_pos + T, device=device), torch.arange(start_pos, start_pos + T, device=device)
    return keys[None, :] // block_len <= queries[:, None] // block_len


# ---------------------------------------------------------------- the block
class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head, self.causal, self.dropout = config.n_head, config.causal, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=False)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary, kv_cache=None, layer=0, start_pos=0, mask=None):
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).transpose(1, 3)  # (B, H, 3, T, hs)
        if rotary is not None:  # q and k turn together: one rotation of the (B, H, 2, T, hs) pair
            qk = apply_rotary(qkv[:, :, :2], *rotary)
            q, k, v = qk[:, :, 0], qk[:, :, 1], qkv[:, :, 2]  # (B, H, T, hs) each
        else:
            q, k, v = qkv.unbind(2)
        is_causal = self.causal  # block diffusion brings its own mask (Transformer.forward)
        if kv_cache is not None:  # append this step's keys and values, attend to everything so far
            end = start_pos + T
            kv_cache.k[layer, :, :, start_pos:end] = k
            kv_cache.v[layer, :, :, start_pos:end] = v
            k, v = kv_cache.k[layer, :, :, :end], kv_cache.v[layer, :, :, :end]
            if start_pos > 0 and self.causal:  # query i sits at position start_pos + i and sees keys up to there
                is_causal = False
                if T > 1:
                    mask = torch.arange(end, device=x.device)[None, :] <= start_pos + torch.arange(T, device=x.device)[:, None]
        # the diffusion denoiser attends both ways: a masked character is guessed from both sides
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.activation = config.activation
        if self.activation not in ("gelu", "relu2"):
            raise ValueError(f"activation must be 'gelu' or 'relu2', not {self.activation!r}")

    def forward(self, x):
        h = self.fc(x)  # (B, T, 4C)
        # GELU is GPT-2's smooth ReLU. ReLU squared (Primer, modded-nanogpt) is sparse and
        # cheaper; bench/names.py --ablations measures both on names.
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h).square()
        return self.dropout(self.proj(h))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)). Normalising the input
    of each branch, not the stream, keeps a clean residual path and trains without warm-up tricks.
    RMSNorm (rescale only, no mean subtraction) works as well as LayerNorm and is cheaper."""

    def __init__(self, config):
        super().__init__()
        self.norm1 = nn.RMSNorm(config.n_embd)
        self.attn = Attention(config)
        self.norm2 = nn.RMSNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, rotary, kv_cache=None, layer=0, start_pos=0, mask=None):
        x = x + self.attn(self.norm1(x), rotary, kv_cache, layer, start_pos, mask)
        return x + self.mlp(self.norm2(x))


# ---------------------------------------------------------------- the model
class KVCache:
    """Keys and values of every layer for the positions decoded so far: k, v (n_layer, B, H, block_size, hs)."""

    def __init__(self, config, batch, device, dtype=torch.float32):
        shape = (config.n_layer, batch, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)


class Transformer(nn.Module):
    """Token ids (B, T) -> logits (B, T, n_out). No time input for masked diffusion: the share of
    MASK tokens in xt already tells the denoiser how noisy it is (SPEC 3), and it lets samplers
    cache logits. Uniform and Gaussian noise leave no such trace, so their denoisers are built with
    time_input=True and called as model(xt, t=t): a linear map of time_features(t) is added to every
    position's embedding. Gaussian noise's input is a vector per position (vector_input=K), read by a
    linear map, which for a one-hot vector is exactly an embedding table's row."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        if config.vector_input:
            self.wte = nn.Linear(config.vector_input, config.n_embd, bias=False)
        else:
            self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wtime = nn.Linear(2 * TIME_FREQUENCIES, config.n_embd) if config.time_input else None
        # Rotary positions tell attention the offset between two positions ("the letter before
        # this one"), which filling a gap from its neighbours needs. Alone they cannot tell
        # positions apart in an all-MASK input: every position then sees the same tokens at
        # the same offsets, up to the edges. A learned table (GPT-2) adds absolute positions:
        # the first letter of a name, where names end. bench/names.py --ablations measures each.
        if config.positions not in ("rope", "learned", "both"):
            raise ValueError(f"positions must be 'rope', 'learned' or 'both', not {config.positions!r}")
        self.rope = config.positions in ("rope", "both")
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.positions != "rope" else None
        if self.rope:
            cos, sin = rotary_tables(config.block_size, config.n_embd // config.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)  # not saved: rebuilt from the config
            self.register_buffer("rope_sin", sin, persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = nn.RMSNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.n_out, bias=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual branches start small, so depth adds up gently
            if name.endswith("proj.weight"):
                nn.init.normal_(p, std=0.02 / (2 * config.n_layer) ** 0.5)
        nn.init.zeros_(self.head.weight)  # the first prediction is uniform: loss starts at log(n_out)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def new_kv_cache(self, batch, device=None, dtype=torch.float32):
        """An empty cache for incremental decoding of `batch` sequences (the AR twin, and the clean
        blocks of a block-diffusion denoiser), on `device` (default: the model's)."""
        if not (self.config.causal or self.config.block_len):
            raise ValueError("a KV cache needs a causal model: the denoiser attends to positions not yet decoded.")
        return KVCache(self.config, batch, device or self.head.weight.device, dtype)

    def forward(self, idx, t=None, kv_cache=None, start_pos=0, x0=None):
        B, T = idx.shape[:2]  # ids (B, T), or vectors (B, T, K)
        if start_pos + T > self.config.block_size:
            raise ValueError(f"sequence of {start_pos + T} tokens is longer than block_size {self.config.block_size}")
        if (t is not None) != self.config.time_input:
            raise ValueError("this model " + ("needs t: call it as model(xt, t=t)" if self.config.time_input
                                              else "has no time input; call it without t"))
        if x0 is not None and not (self.config.block_len and kv_cache is None and start_pos == 0):
            raise ValueError("x0 (the clean copy) is read by a block-diffusion denoiser, without a KV cache")
        pos, mask = slice(start_pos, start_pos + T), None
        if self.config.block_len:  # block diffusion: which positions each query may see
            if x0 is not None:  # the clean copy after the noisy one, at the same positions
                idx, pos = torch.cat([idx, x0], dim=1), torch.arange(T, device=idx.device).repeat(2)
                mask = block_diffusion_mask(T, self.config.block_len, idx.device)
            else:  # a run of blocks after those in the cache (or the first ones)
                mask = block_cache_mask(start_pos if kv_cache is not None else 0, T, self.config.block_len, idx.device)
        x = self.wte(idx)  # (B, T, C)
        if t is not None:
            x = x + self.wtime(time_features(t))[:, None, :]  # the same time code at every position
        if self.wpe is not None:
            x = x + self.wpe.weight[pos]
        rotary = (self.rope_cos[pos], self.rope_sin[pos]) if self.rope else None
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, rotary, kv_cache, layer, start_pos, mask)
        return self.head(self.norm_f(x[:, :T])).float()  # (B, T, n_out): the noisy copy's; float even under bf16
