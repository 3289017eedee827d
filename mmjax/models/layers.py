"""Transformer building blocks shared by the towers.

Every parameter carries logical axis names (`embed`, `mlp`, `heads`, `kv`, `vocab`,
`layers`); `mmjax.parallel.sharding` maps them onto the mesh with rules from the config.
"""

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

Dtype = Any


def quick_gelu(x: jax.Array) -> jax.Array:
    """The sigmoid approximation of GELU used by the OpenAI CLIP checkpoints."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: nn.gelu(x, approximate=True),
    "quick_gelu": quick_gelu,
    "relu": nn.relu,
}


def dense_init(names: tuple[str, ...], stddev: float | None = None) -> Callable[..., Any]:
    """A kernel initialiser with logical axis names attached."""
    init = nn.initializers.xavier_uniform() if stddev is None else nn.initializers.normal(stddev)
    return nn.with_logical_partitioning(init, names)


def zeros_init(names: tuple[str, ...]) -> Callable[..., Any]:
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), names)


class DenseND(nn.Module):
    """A dense layer with multi-dimensional input and output axes and named parameters.

    Contracts the last `len(in_names)` axes of x into `features`. Unlike
    `nn.DenseGeneral`, the kernel is created in its final shape, so its logical axis
    names always match its rank.
    """

    features: tuple[int, ...]
    in_names: tuple[str | None, ...]
    out_names: tuple[str | None, ...]
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = len(self.in_names)
        in_shape = x.shape[-n_in:]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.variance_scaling(
                    1.0,
                    "fan_avg",
                    "uniform",
                    in_axis=tuple(range(n_in)),
                    out_axis=tuple(range(n_in, n_in + len(self.features))),
                ),
                self.in_names + self.out_names,
            ),
            in_shape + tuple(self.features),
            jnp.float32,
        )
        bias = self.param("bias", zeros_init(self.out_names), tuple(self.features), jnp.float32)
        contract = tuple(range(x.ndim - n_in, x.ndim))
        y = jax.lax.dot_general(
            x.astype(self.dtype),
            kernel.astype(self.dtype),
            ((contract, tuple(range(n_in))), ((), ())),
        )
        return y + bias.astype(self.dtype)


def layer_norm(dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm computed in float32 whatever the activation dtype, with named params."""
    return nn.LayerNorm(
        epsilon=1e-5,
        dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=zeros_init(("norm",)),
        name=name,
    )


# How `jax.nn.dot_product_attention` runs: XLA's einsums (any backend, logits and softmax
# in float32), or cuDNN's fused flash attention (NVIDIA GPUs, 16-bit activations only,
# head_dim a multiple of 8 up to 128). "auto" picks cuDNN where it applies, else XLA.
ATTENTION_IMPLEMENTATIONS = ("auto", "xla", "cudnn")


def attention_implementation(name: str, dtype: Dtype, head_dim: int) -> str:
    """The implementation `name` ("auto", "xla", "cudnn") resolves to here."""
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"Unknown attention {name!r}; use one of {ATTENTION_IMPLEMENTATIONS}.")
    if name != "auto":
        return name
    fits = jnp.dtype(dtype).itemsize == 2 and head_dim % 8 == 0 and head_dim <= 128
    return "cudnn" if fits and jax.default_backend() == "gpu" else "xla"


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    mask: jax.Array | None,
    implementation: str = "auto",
) -> jax.Array:
    """Softmax attention of q [B, T, H, D] over k, v [B, S, H, D]; `mask` [B or 1, 1 or H,
    T, S] True where a query may look. Logits are accumulated and normalised in float32
    whatever the activation dtype; with XLA a query with no key left attends uniformly
    (a softmax over equal logits), so padded rows stay finite."""
    impl = attention_implementation(implementation, q.dtype, q.shape[-1])
    return jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)


def _checkpoint_name(x: jax.Array, name: str) -> jax.Array:
    """Tags `x` for `remat="names:..."` policies (REMAT_POLICIES); a no-op otherwise."""
    return checkpoint_name(x, name)


class Attention(nn.Module):
    """Multi-head self-attention through `attend` (fused where available)."""

    num_heads: int
    dtype: Dtype = jnp.float32
    implementation: str = "auto"  # ATTENTION_IMPLEMENTATIONS

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}.")
        head_dim = width // self.num_heads
        qkv = DenseND(
            (3, self.num_heads, head_dim), ("embed",), (None, "heads", "kv"), self.dtype, name="qkv"
        )(x)
        qkv = _checkpoint_name(qkv, "qkv")
        q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
        out = _checkpoint_name(attend(q, k, v, mask, self.implementation), "context")
        out = DenseND((width,), ("heads", "kv"), ("embed",), self.dtype, name="out")(out)
        return _checkpoint_name(out, "attn_out")


class MlpBlock(nn.Module):
    """Transformer MLP: Dense(mlp_dim) -> activation -> Dense(width)."""

    mlp_dim: int
    act: str = "gelu"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        h = nn.Dense(
            self.mlp_dim,
            dtype=self.dtype,
            kernel_init=dense_init(("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.normal(1e-6), ("mlp",)),
            name="fc1",
        )(x)
        h = ACTIVATIONS[self.act](_checkpoint_name(h, "mlp_hidden"))
        out = nn.Dense(
            width,
            dtype=self.dtype,
            kernel_init=dense_init(("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.normal(1e-6), ("embed",)),
            name="fc2",
        )(h)
        return _checkpoint_name(out, "mlp_out")


class EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    num_heads: int
    mlp_dim: int
    act: str = "gelu"
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, None]:
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        y = layer_norm(self.dtype, "ln1")(x).astype(self.dtype)
        x = x + Attention(self.num_heads, self.dtype, self.attention, name="attn")(y, mask)
        y = layer_norm(self.dtype, "ln2")(x).astype(self.dtype)
        x = x + MlpBlock(self.mlp_dim, self.act, self.dtype, name="mlp")(y)
        return x, None


# Activation checkpointing per block: what the backward pass may keep rather than recompute.
# "names:a,b" keeps only the values tagged with those names inside a block: "qkv" (the
# q/k/v projection), "context" (attention output before its projection), "attn_out",
# "mlp_hidden" (fc1 output before the activation), "mlp_out".
CHECKPOINT_NAMES = ("qkv", "context", "attn_out", "mlp_hidden", "mlp_out")
REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # keep everything (no recomputation)
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute the whole block
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def remat_policy(name: str) -> Any:
    """A policy by name: "none", "full", "dots", or "names:a,b" (keep the named values)."""
    if name.startswith("names:"):
        names = name[len("names:") :].split(",")
        unknown = sorted(set(names) - set(CHECKPOINT_NAMES))
        if unknown:
            raise ValueError(f"remat {name!r}: unknown names {unknown}; known {CHECKPOINT_NAMES}.")
        return jax.checkpoint_policies.save_only_these_names(*names)
    if name not in REMAT_POLICIES:
        known = ", ".join([*REMAT_POLICIES, "names:a,b"])
        raise ValueError(f"Unknown remat policy {name!r}; known: {known}.")
    return REMAT_POLICIES[name]


class Encoder(nn.Module):
    """`depth` blocks under `nn.scan`: one compiled block whatever the depth.

    Scanning keeps compile time flat in depth (seconds for a 24-layer model on CPU);
    parameters are stacked along a leading `layers` axis. `remat` names a policy of
    `REMAT_POLICIES`; `attention` one of `ATTENTION_IMPLEMENTATIONS`.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    act: str = "gelu"
    dtype: Dtype = jnp.float32
    remat: str = "none"
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        block = EncoderBlock
        if self.remat != "none":
            block = nn.remat(block, prevent_cse=False, policy=remat_policy(self.remat))
        stack = nn.scan(
            block,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=nn.broadcast,
            length=self.depth,
            metadata_params={nn.PARTITION_NAME: "layers"},
        )
        x, _ = stack(
            self.num_heads, self.mlp_dim, self.act, self.dtype, self.attention, name="blocks"
        )(x, mask)
        return x


class MAPHead(nn.Module):
    """Multihead attention pooling: a learned query attends over the tokens."""

    num_heads: int
    mlp_dim: int
    act: str = "gelu"
    dtype: Dtype = jnp.float32
    attention: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """`mask` [B, N]: True for tokens the probe may attend to (None: all)."""
        batch, _, width = x.shape
        probe = self.param(
            "probe",
            nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, None, "embed")),
            (1, 1, width),
        )
        query = jnp.tile(probe, (batch, 1, 1)).astype(self.dtype)
        head_dim = width // self.num_heads
        q = DenseND((self.num_heads, head_dim), ("embed",), ("heads", "kv"), self.dtype, name="q")(
            query
        )
        kv = DenseND(
            (2, self.num_heads, head_dim), ("embed",), (None, "heads", "kv"), self.dtype, name="kv"
        )(x)
        k, v = kv[..., 0, :, :], kv[..., 1, :, :]
        mask = None if mask is None else mask[:, None, None, :]
        out = DenseND((width,), ("heads", "kv"), ("embed",), self.dtype, name="out")(
            attend(q, k, v, mask, self.attention)
        )
        y = layer_norm(self.dtype, "ln")(out).astype(self.dtype)
        out = out + MlpBlock(self.mlp_dim, self.act, self.dtype, name="mlp")(y)
        return out[:, 0]
