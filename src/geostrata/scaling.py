"""Back-of-the-envelope memory and throughput for training a preset on N GPUs.

Why: before renting 8 GPUs for the `base` or `large` preset, one wants to know which sharding
strategy fits, at what micro-batch, and roughly how many tokens per second to expect. Every
number here is computed from the configs (parameter counts on the meta device, nothing
allocated or downloaded) and a few stated assumptions; docs/scaling.md derives each formula.
None of it is a measurement.

    est = estimate("base", gpus=8, strategy="zero2", seq_len=2048, micro_batch=8)
    est.memory.total / 2**30, est.tokens_per_s
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geostrata.errors import ConfigError

if TYPE_CHECKING:
    from geostrata.model.configuration import GeoStrataConfig

GIB = 2**30
STRATEGIES = ("ddp", "zero2", "zero3", "fsdp")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
# Dense (no sparsity) peak tensor-core TFLOP/s of the SXM parts; fp32 means TF32 matmuls.
GPU_PEAK_TFLOPS = {"h100": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},
                   "h200": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7},  # H100's chip
                   "a100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0}}
# usable HBM as nvidia-smi reports it (H200: 143,771 MiB read on a lent machine)
GPU_MEMORY_GIB = {"h100": 79.6, "h200": 140.4, "a100": 80.0}
DEFAULT_MFU = 0.40  # fraction of peak the matmuls actually achieve (an assumption, not measured)
QLORA_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # NF4 + double-quantised absmax per 64 weights
OPTIMIZER_BYTES_MIXED = 12  # AdamW: fp32 master weight + m + v per trainable parameter
OPTIMIZER_BYTES_FP32 = 8  # AdamW: m + v (the fp32 weight is the master)
CONTEXT_BYTES = 1 * GIB  # CUDA context, cuBLAS workspaces, NCCL buffers
FRAGMENTATION = 0.10  # caching-allocator slack on top of everything else
LOSS_BYTES_PER_LOGIT = 8  # fp32 upcast of the logits for the loss + its fp32 gradient


@dataclass(frozen=True)
class ParamCounts:
    """Parameter counts by part; `llm_linear` are the decoder's Linear weights (4-bit in QLoRA)."""

    vision: int
    llm: int
    llm_linear: int
    llm_embedding: int  # input embedding table (no FLOPs: a lookup)
    glue: int  # augmentation + experts + fusion: always trained
    lora: int
    trainable: int
    frozen: int

    @property
    def total(self) -> int:
        return self.trainable + self.frozen


@dataclass(frozen=True)
class MemoryBreakdown:
    """Bytes per GPU. `gathered` is what full sharding all-gathers for the layers running now."""

    weights: float
    gradients: float
    optimizer: float
    activations: float
    gathered: float
    overhead: float

    @property
    def total(self) -> float:
        return (self.weights + self.gradients + self.optimizer + self.activations
                + self.gathered + self.overhead)


@dataclass(frozen=True)
class Setup:
    """What is being estimated; validated so a typo fails here rather than as a silly number."""

    gpus: int = 1
    strategy: str = "ddp"
    lora: bool = True
    qlora: bool = False
    freeze_llm: bool = True
    freeze_vision: bool = True
    seq_len: int = 2048
    micro_batch: int = 1
    grad_checkpointing: bool = True
    dtype: str = "bf16"
    gpu: str = "h100"
    mfu: float = DEFAULT_MFU
    flash_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("gpus", "seq_len", "micro_batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"estimate: {name} must be an integer >= 1, got {value!r}")
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("dtype", self.dtype, tuple(DTYPE_BYTES))
        _choice("gpu", self.gpu, tuple(GPU_PEAK_TFLOPS))
        if not 0.0 < self.mfu <= 1.0:
            raise ConfigError(f"estimate: mfu must be in (0, 1], got {self.mfu!r}")
        if self.qlora and not self.lora:
            raise ConfigError("estimate: qlora=True needs lora=True (QLoRA trains LoRA adapters)")

    @property
    def llm_trainable(self) -> bool:
        """Whether the LLM's own weights get gradients (full fine-tuning)."""
        return not (self.lora or self.freeze_llm)

    @property
    def shards(self) -> int:
        """How many ways weights are split (1 under DDP and ZeRO-2)."""
        return self.gpus if self.strategy in ("zero3", "fsdp") else 1


@dataclass(frozen=True)
class Estimate:
    """Per-GPU memory and throughput of one setup; `tokens_per_s` is for all GPUs together."""

    preset: str
    setup: Setup
    params: ParamCounts
    memory: MemoryBreakdown
    gpu_memory_gib: float
    flops_per_token: float
    tokens_per_s_per_gpu: float
    tokens_per_s: float
    samples_per_s: float

    @property
    def fits(self) -> bool:
        return self.memory.total <= self.gpu_memory_gib * GIB

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the dataclass fields plus the derived totals."""
        out = dataclasses.asdict(self)
        out["params"]["total"] = self.params.total
        out["memory"]["total"] = self.memory.total
        out["memory_gib"] = self.memory.total / GIB
        out["fits"] = self.fits
        return out


@dataclass(frozen=True)
class ModelShapes:
    """The sizes the activation and FLOP formulas need, read from the HF configs."""

    layers: int
    hidden: int
    intermediate: int
    kv_dim: int  # width of K (and of V): num_key_value_heads * head_dim
    heads: int
    vocab: int
    image_tokens: int  # positions of the LLM sequence taken by the image
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    vision_tokens: int  # patches (+ class token) per image in the tower
    largest_layer: int  # parameters of one LLM decoder layer (one FSDP / ZeRO-3 unit)


def estimate(
    preset_or_config: str | GeoStrataConfig,
    *,
    gpus: int = 1,
    strategy: str = "ddp",
    lora: bool | None = None,
    qlora: bool = False,
    freeze_llm: bool | None = None,
    seq_len: int = 2048,
    micro_batch: int = 1,
    grad_checkpointing: bool = True,
    dtype: str = "bf16",
    gpu: str = "h100",
    mfu: float = DEFAULT_MFU,
    flash_attention: bool = True,
) -> Estimate:
    """Memory per GPU and tokens/s for training `preset_or_config` on `gpus` GPUs.

    `lora` / `freeze_llm` default to the config's `use_lora` / `freeze_llm`; `qlora` implies
    `lora`. `seq_len` counts every LLM position (image tokens included), `micro_batch` is per
    GPU. The vision tower is frozen or trained as the config says; the GeoStrata modules
    (augmentation, experts, fusion) are always trained.
    """
    config = _resolve(preset_or_config)
    lora = bool(config.use_lora) or qlora if lora is None else lora
    setup = Setup(gpus=gpus, strategy=strategy, lora=lora, qlora=qlora,
                  freeze_llm=config.freeze_llm if freeze_llm is None else freeze_llm,
                  freeze_vision=config.freeze_vision, seq_len=seq_len, micro_batch=micro_batch,
                  grad_checkpointing=grad_checkpointing, dtype=dtype, gpu=gpu, mfu=mfu,
                  flash_attention=flash_attention)
    if seq_len <= config.num_image_tokens:
        raise ConfigError(f"estimate: seq_len={seq_len} leaves no room for text after "
                          f"{config.num_image_tokens} image tokens")
    counts, shapes = parameter_counts(config, setup)
    memory = memory_per_gpu(counts, shapes, setup)
    flops = flops_per_token(counts, shapes, setup)
    per_gpu = GPU_PEAK_TFLOPS[gpu][dtype] * 1e12 * mfu / flops
    preset = preset_or_config if isinstance(preset_or_config, str) else "custom"
    return Estimate(preset, setup, counts, memory, GPU_MEMORY_GIB[gpu], flops, per_gpu,
                    per_gpu * gpus, per_gpu * gpus / seq_len)


def parameter_counts(config: GeoStrataConfig, setup: Setup) -> tuple[ParamCounts, ModelShapes]:
    """Tower and LLM counted on the meta device (closed form if that fails), glue in closed form."""
    vision, vision_shape = _vision_count(config)
    llm = _llm_count(config.text_config, list(config.lora_target_modules), config.lora_r)
    glue = glue_parameters(config, vision_shape["hidden"])
    trainable = glue + (vision if not setup.freeze_vision else 0)
    trainable += llm["lora"] if setup.lora else (llm["total"] if setup.llm_trainable else 0)
    frozen = vision + llm["total"] + glue + (llm["lora"] if setup.lora else 0) - trainable
    counts = ParamCounts(vision, llm["total"], llm["linear"], llm["embedding"], glue,
                         llm["lora"] if setup.lora else 0, trainable, frozen)
    text = config.text_config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    shapes = ModelShapes(text.num_hidden_layers, text.hidden_size, text.intermediate_size,
                     kv_heads * head_dim, heads, text.vocab_size, config.num_image_tokens,
                     vision_shape["layers"], vision_shape["hidden"],
                     vision_shape["intermediate"], vision_shape["tokens"], llm["layer"])
    return counts, shapes


def llama_parameters(text_config: Any) -> dict[str, int]:
    """Closed-form parameter count of a Llama-architecture causal LM (no biases, RMSNorm).

    Per layer: q and o are h x h (heads * head_dim), k and v h x kv_dim, the SwiGLU MLP is
    3 h x I, plus two norm gains; then the embedding, the final norm and the LM head.
    """
    h, i, v = text_config.hidden_size, text_config.intermediate_size, text_config.vocab_size
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or h // heads
    kv = (getattr(text_config, "num_key_value_heads", None) or heads) * head_dim
    linear = 2 * h * heads * head_dim + 2 * h * kv + 3 * h * i
    layer = linear + 2 * h
    head = 0 if getattr(text_config, "tie_word_embeddings", False) else v * h
    total = text_config.num_hidden_layers * layer + v * h + h + head
    return {"total": total, "linear": text_config.num_hidden_layers * linear, "layer": layer,
            "embedding": v * h}


def glue_parameters(config: GeoStrataConfig, vision_hidden: int) -> int:
    """The GeoStrata modules' weight matrices (biases and norms, < 0.1 %, left out).

    Per level: augmentation = input projection, question-free alignment projection and, with
    retrieval, the query, cue and question projections and a cross-attention (4 d^2); experts =
    self-attention, FFN and (below the coarsest level) cross-attention; fusion = a 2-layer MLP
    into the LLM width (the llava baseline has only that MLP).
    """
    d, dk, n = config.hidden_size, config.knowledge_dim, len(config.levels)
    llm_h = config.text_config.hidden_size
    if config.baseline == "llava":
        return vision_hidden * llm_h + llm_h * llm_h
    fusion = d * llm_h + llm_h * llm_h
    augment = vision_hidden * d + d * dk
    if config.retrieval and config.top_k > 0:
        augment += dk * dk + 2 * dk * d + 4 * d * d  # query (question -> Dk), cue, question
    experts = n * (4 + 2 * config.expert_ffn_mult) * d * d + (n - 1) * 4 * d * d
    return n * augment + (experts if config.experts else 0) + fusion


def memory_per_gpu(counts: ParamCounts, shapes: ModelShapes, setup: Setup) -> MemoryBreakdown:
    """Weights, gradients and AdamW states per GPU under the sharding strategy, plus activations.

    Frozen weights are stored in `dtype` (decoder Linear weights in 4-bit NF4 under QLoRA);
    each trainable parameter costs dtype bytes of weight and gradient plus 12 bytes of AdamW
    state (fp32 master, m, v), or 8 when training in fp32. ZeRO-2 shards gradients and optimizer
    states; ZeRO-3 and FSDP shard everything but must all-gather the unit running now.
    """
    b = DTYPE_BYTES[setup.dtype]
    frozen_bytes = counts.frozen * b
    if setup.qlora:
        frozen_bytes -= counts.llm_linear * (b - QLORA_BYTES)
    weights = frozen_bytes + counts.trainable * b
    grads = counts.trainable * b
    optim = counts.trainable * (OPTIMIZER_BYTES_FP32 if b == 4 else OPTIMIZER_BYTES_MIXED)
    state_shards = 1 if setup.strategy == "ddp" else setup.gpus
    gathered = 0.0
    if setup.shards > 1:  # the root unit (tower, glue, embeddings, head) + two decoder layers
        root = counts.vision + counts.glue + counts.llm - shapes.layers * shapes.largest_layer
        per_layer = QLORA_BYTES if setup.qlora else b
        gathered = root * b + 2 * shapes.largest_layer * per_layer
    acts = activation_bytes(shapes, setup)
    sharded = weights / setup.shards + (grads + optim) / state_shards
    overhead = CONTEXT_BYTES + FRAGMENTATION * (sharded + acts + gathered)
    return MemoryBreakdown(weights / setup.shards, grads / state_shards, optim / state_shards,
                           acts, gathered, overhead)


def activation_bytes(shapes: ModelShapes, setup: Setup) -> float:
    """Activations kept for the backward pass of one micro-batch on one GPU.

    Per Llama decoder layer and token (16-bit elements): layer input, norm output, Q/K/V,
    attention output, post-attention residual and norm output (6h + 2 kv_dim) and the SwiGLU
    gate, up, SiLU and product (4I); eager attention adds the (heads x s) probabilities. With
    checkpointing only each layer's input is kept, plus one layer's full set while it is
    recomputed; either way one layer's worth of activation gradients is alive during its
    backward. The logits add vocab x (dtype + 8) bytes per token. A frozen tower keeps nothing.
    """
    b = DTYPE_BYTES[setup.dtype]
    tokens = setup.seq_len * setup.micro_batch
    per_layer = tokens * (6 * shapes.hidden + 2 * shapes.kv_dim + 4 * shapes.intermediate)
    if not setup.flash_attention:
        per_layer += 2 * shapes.heads * setup.seq_len * tokens
    llm = _stack(per_layer, tokens * shapes.hidden, shapes.layers, setup.grad_checkpointing)
    logits = tokens * shapes.vocab * (b + LOSS_BYTES_PER_LOGIT)
    vision = 0.0
    if not setup.freeze_vision:
        v_tokens = shapes.vision_tokens * setup.micro_batch
        v_layer = v_tokens * (8 * shapes.vision_hidden + 2 * shapes.vision_intermediate)
        vision = _stack(v_layer, v_tokens * shapes.vision_hidden, shapes.vision_layers,
                        setup.grad_checkpointing)
    return (llm + vision) * b + logits


def flops_per_token(counts: ParamCounts, shapes: ModelShapes, setup: Setup) -> float:
    """Training FLOPs per LLM token, from 2 FLOPs per multiply-add.

    A forward costs 2 N per token (N = LLM parameters that multiply: all but the embedding
    table) plus causal attention 2 L s h. Backward costs 2 N more for the activation gradients
    and 2 N for the weight gradients only when the LLM is fully trained: 6 N in total for full
    fine-tuning, 4 N for LoRA or a frozen LLM (the adapters' own FLOPs are r / h of that).
    Checkpointing adds one more forward. Tower and glue costs are spread over the sequence.
    """
    n = counts.llm - counts.llm_embedding
    forward = 2 * n + 2 * shapes.layers * setup.seq_len * shapes.hidden
    passes = (3 if setup.llm_trainable else 2) + (1 if setup.grad_checkpointing else 0)
    vision_forward = 2 * counts.vision * shapes.vision_tokens
    vision_passes = 1 if setup.freeze_vision else 3 + int(setup.grad_checkpointing)
    glue = 6 * counts.glue * shapes.image_tokens
    per_sample = vision_forward * vision_passes + glue
    return forward * passes + per_sample / setup.seq_len


# ---------------------------------------------------------------- helpers
def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"estimate: {name} must be one of {choices}, got {value!r}")


def _resolve(preset_or_config: str | GeoStrataConfig) -> GeoStrataConfig:
    from geostrata.model.configuration import GeoStrataConfig

    if isinstance(preset_or_config, str):
        return GeoStrataConfig.from_preset(preset_or_config)
    if not isinstance(preset_or_config, GeoStrataConfig):
        raise ConfigError(f"estimate: expected a preset name or GeoStrataConfig, "
                          f"got {type(preset_or_config).__name__}")
    return preset_or_config


def _stack(per_layer: float, layer_input: float, layers: int, checkpointing: bool) -> float:
    """Elements alive at the peak of backward for `layers` blocks.

    Kept: every block's activations, or with checkpointing only their inputs plus the one block
    being recomputed; plus one block's worth of activation gradients while its backward runs.
    """
    kept = layers * layer_input + per_layer if checkpointing else layers * per_layer
    return kept + per_layer


def _vision_count(config: GeoStrataConfig) -> tuple[int, dict[str, int]]:
    """The tower's parameters and sizes; the packaged EfficientNet is counted by building it."""
    if config.vision_tower != "hf":
        import torch

        from geostrata.model.effnet import EfficientNetLite0

        with torch.device("meta"):
            tower = EfficientNetLite0()
        n = sum(p.numel() for p in tower.parameters())
        return n, {"layers": 0, "hidden": 320, "intermediate": 0, "tokens": 0}
    vc = config.vision_config
    tokens = (vc.image_size // vc.patch_size) ** 2 + 1
    shape = {"layers": vc.num_hidden_layers, "hidden": vc.hidden_size,
             "intermediate": vc.intermediate_size, "tokens": tokens}
    return _meta_count(vc, causal_lm=False) or _vit_parameters(vc), shape


def _vit_parameters(vc: Any) -> int:
    """Closed-form ViT: patch embedding, positions, per layer attention + MLP + 2 LayerNorms."""
    h, i, p = vc.hidden_size, vc.intermediate_size, vc.patch_size
    patches = (vc.image_size // p) ** 2
    layer = 4 * h * h + 4 * h + 2 * h * i + i + h + 4 * h
    return 3 * p * p * h + (patches + 1) * h + h + vc.num_hidden_layers * layer + 4 * h


def _llm_count(text_config: Any, targets: list[str], rank: int) -> dict[str, int]:
    """Meta-device count of the causal LM, its Linear weights and LoRA adapter sizes."""
    import torch
    from transformers import AutoModelForCausalLM

    closed = llama_parameters(text_config)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(text_config)
    except Exception:  # an architecture transformers cannot build: closed form (Llama) instead
        return {**closed, "lora": _lora_closed_form(text_config, targets, rank)}
    layers = model.get_decoder().layers
    layer_linear = [m for m in layers.modules() if isinstance(m, torch.nn.Linear)]
    adapters = sum(rank * (m.in_features + m.out_features) for name, m in layers.named_modules()
                   if isinstance(m, torch.nn.Linear) and name.split(".")[-1] in targets)
    return {"total": sum(p.numel() for p in model.parameters()),
            "linear": sum(m.weight.numel() for m in layer_linear),
            "layer": sum(p.numel() for p in layers[0].parameters()),
            "embedding": model.get_input_embeddings().weight.numel(),
            "lora": adapters}


def _lora_closed_form(text_config: Any, targets: list[str], rank: int) -> int:
    h, i = text_config.hidden_size, text_config.intermediate_size
    heads = text_config.num_attention_heads
    head_dim = getattr(text_config, "head_dim", None) or h // heads
    kv = (getattr(text_config, "num_key_value_heads", None) or heads) * head_dim
    shapes = {"q_proj": (h, heads * head_dim), "k_proj": (h, kv), "v_proj": (h, kv),
              "o_proj": (heads * head_dim, h), "gate_proj": (h, i), "up_proj": (h, i),
              "down_proj": (i, h)}
    per_layer = sum(rank * sum(shapes[t]) for t in targets if t in shapes)
    return text_config.num_hidden_layers * per_layer


def _meta_count(model_config: Any, causal_lm: bool) -> int | None:
    """Parameters of `AutoModel(ForCausalLM).from_config` built on the meta device, or None."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    factory = AutoModelForCausalLM if causal_lm else AutoModel
    try:
        with torch.device("meta"):
            model = factory.from_config(model_config)
    except Exception:  # unknown model_type etc.: the caller falls back to a closed form
        return None
    return sum(p.numel() for p in model.parameters())
