"""A Hugging Face byte-level BPE tokenizer (tokenizer.json) written into a GGUF file the way llama.cpp reads it.

The facts come from llama.cpp's converter (convert_hf_to_gguf.py, `get_vocab_base` and `_set_vocab_gpt2`, as
vendored by llama-cpp-python 0.3.36): the token list in id order, padded to the model's vocab_size; a token type per
id; the merges, special ids, add_bos/eos and chat template through the gguf package's SpecialVocab; and the
pre-tokenizer's name, found by hashing how the tokenizer splits a fixed test text. Needs `gguf` and `tokenizers`
(slmserve's own dependencies); neither imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


class UnsupportedModel(ValueError):
    """The directory holds something the converter cannot turn into a GGUF llama.cpp runs."""


# llama.cpp's `chktxt`: whitespace runs, emoji, digit runs, scripts and contractions, where pre-tokenizers differ.
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 "
    "3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ "
    "------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, "
    "'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
# sha256 of str(the test text's token ids) -> llama.cpp's tokenizer.ggml.pre, for the byte-level BPE families that
# small models use (copied from get_vocab_base_pre; llama.cpp implements each name's split in llama-vocab.cpp).
PRE_TOKENIZERS = {
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # ruGPT3XL
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen 1.5 / 2
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen 3
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "6221ad2852e85ce96f791f476e0b390cf9b474c9e3d1362f53a24a06dc8220ff": "refact",
}


def pre_tokenizer(tokenizer_json: Path) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer. UnsupportedModel for one it does not know."""
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_json)).encode(CHECK_TEXT).ids
    digest = hashlib.sha256(str(ids).encode()).hexdigest()
    if digest not in PRE_TOKENIZERS:
        # llama.cpp's converter refuses here too: a wrong guess would tokenize some text differently than training.
        raise UnsupportedModel(f"unknown BPE pre-tokenizer (check hash {digest[:16]}...)")
    return PRE_TOKENIZERS[digest]


def _looks_special(token: str) -> bool:
    """Added tokens some models forget to mark special (llama.cpp's does_token_look_special)."""
    return (token.startswith("<|") and token.endswith("|>")) or token in ("<pad>", "<mask>")


def token_table(tokenizer: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """(token text by id, gguf.TokenType by id) for the model's whole embedding table; ids the tokenizer never
    produces are UNUSED placeholders, as llama.cpp writes them."""
    import gguf

    by_id = {i: token for token, i in tokenizer["model"]["vocab"].items()}
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if by_id and max(by_id) >= vocab_size:
        raise UnsupportedModel(f"the tokenizer has ids up to {max(by_id)}, the model only {vocab_size} embeddings")
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if i not in added:
            types.append(gguf.TokenType.NORMAL)
        elif added[i].get("special") or _looks_special(token):
            types.append(gguf.TokenType.CONTROL)
        else:
            types.append(gguf.TokenType.USER_DEFINED)
    return tokens, types


def add_vocab(writer, model_dir: Path, vocab_size: int) -> None:
    """Write the directory's tokenizer into `writer` (a gguf.GGUFWriter). UnsupportedModel for tokenizers other than
    byte-level BPE in tokenizer.json (SentencePiece ones need llama.cpp's SPM path, not written here)."""
    import gguf

    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise UnsupportedModel("no tokenizer.json (only byte-level BPE tokenizers in tokenizer.json are converted)")
    tokenizer = json.loads(path.read_text(encoding="utf-8"))
    model = tokenizer.get("model") or {}
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(tokenizer.get("decoder")):
        raise UnsupportedModel(f"a {model.get('type')} tokenizer that is not byte-level BPE")
    tokens, types = token_table(tokenizer, vocab_size)
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(pre_tokenizer(path))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)
    if not special.merges:
        raise UnsupportedModel("tokenizer.json has no merges")
    special.add_to_gguf(writer, quiet=True)
    # transformers adds a BOS only when the post-processor says so (SpecialVocab then sets it); llama.cpp's default
    # for some pre-tokenizers is to add one, which would shift every prompt by a token against the torch engine.
    if "bos" not in special.add_special_token:
        writer.add_add_bos_token(False)
