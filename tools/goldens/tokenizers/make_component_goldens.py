#!/usr/bin/env python3
"""Small tokenizers that exercise each tokenizer.json component, with goldens from HF `tokenizers`.

Each configuration is trained here (tokenizers==0.23.3) on a public text (default: the GPL-3 text
from Debian's common-licenses), saved as Fixtures/components/<name>/tokenizer.json, and encoded
and decoded over the shared corpus (Fixtures/corpus.json, written by make_goldens.py).
Run: /work/venv-tok/bin/python tools/goldens/tokenizers/make_component_goldens.py
"""
import argparse
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

import make_goldens as mg

OUT = os.path.join(mg.FIX, "components")
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


def bpe(**kw):
    extra = {k: v for k, v in kw.items() if k in ("continuing_subword_prefix", "end_of_word_suffix")}
    return Tokenizer(models.BPE(unk_token="<unk>", **kw)), trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, show_progress=False, **extra)


def bytelevel_bpe(**kw):
    return Tokenizer(models.BPE(**kw)), trainers.BpeTrainer(
        vocab_size=500, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def wordlevel():
    return Tokenizer(models.WordLevel(unk_token="<unk>")), trainers.WordLevelTrainer(
        vocab_size=300, special_tokens=SPECIALS, show_progress=False)


def wordpiece():
    return Tokenizer(models.WordPiece(unk_token="<unk>")), trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=SPECIALS, show_progress=False)


def template():
    return processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B </s>",
                                         special_tokens=[("<s>", 1), ("</s>", 2)])


def configs():
    out = {}

    t, tr = bpe()
    t.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    out["nfkc-lowercase-whitespace-bpe"] = (t, tr, None)

    t, tr = wordlevel()
    t.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents()])
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out["nfd-stripaccents-whitespacesplit-wordlevel"] = (t, tr, None)

    for behavior in ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"):
        t, tr = bytelevel_bpe()
        t.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Strip(),
                                             normalizers.Replace(Regex(r"\s+"), " ")])
        t.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\d+|[.,;:!?]"), behavior=behavior),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        t.decoder = decoders.ByteLevel()
        out[f"split-regex-{behavior.replace('_', '-')}"] = (t, tr, None)

    t, tr = bytelevel_bpe()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(" ", behavior="merged_with_next", invert=False),
        pre_tokenizers.Split(Regex(r"[a-z]+"), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    out["split-string-and-inverted"] = (t, tr, None)

    t, tr = wordpiece()
    t.normalizer = normalizers.NFKD()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=False), pre_tokenizers.Punctuation(behavior="contiguous"),
        pre_tokenizers.WhitespaceSplit()])
    t.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    t.post_processor = template()
    out["digits-punctuation-wordpiece"] = (t, tr, None)

    for scheme, split in (("first", False), ("never", True), ("always", True)):
        t, tr = bpe()
        t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=split)
        t.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=scheme, split=split)
        out[f"metaspace-{scheme}-{'split' if split else 'nosplit'}"] = (t, tr, ["<x>", "[Y]"])

    t, tr = bpe()
    t.pre_tokenizer = pre_tokenizers.CharDelimiterSplit("e")
    out["chardelimiter"] = (t, tr, None)

    t, tr = bpe(continuing_subword_prefix="##", end_of_word_suffix="</w>")
    t.normalizer = normalizers.Lowercase()
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.decoder = decoders.BPEDecoder(suffix="</w>")
    out["bpe-prefix-suffix"] = (t, tr, None)

    t, tr = bytelevel_bpe()
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 1))
    out["bytelevel-prefix-roberta"] = (t, tr, None)

    t, tr = bytelevel_bpe(ignore_merges=True)
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False), template()])
    out["llama3-split-ignore-merges"] = (t, tr, None)

    t, tr = bytelevel_bpe()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{Lu}?\p{Ll}+|\p{N}+|\s+"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    out["split-generic-regex"] = (t, tr, None)

    t, tr = bpe(byte_fallback=True)
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
    out["prepend-replace-bytefallback-nofallbackbytes"] = (t, tr, None)

    t, tr = wordpiece()
    t.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                              lowercase=False)
    t.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    t.decoder = decoders.WordPiece()
    t.post_processor = processors.BertProcessing(("</s>", 2), ("<s>", 1))
    out["bert-cased-keepaccents"] = (t, tr, None)
    return out


def add_tokens_variants(t):
    """Added tokens with every flag, matched as HF does."""
    t.add_tokens([
        AddedToken("<x>", lstrip=True, rstrip=False, normalized=False, special=False),
        AddedToken("[Y]", lstrip=False, rstrip=True, normalized=False, special=True),
        AddedToken("word", single_word=True, normalized=False, special=False),
        AddedToken("Hello", normalized=True, special=False),
        AddedToken("ﬁ", normalized=True, special=False),
    ])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    args = ap.parse_args()
    texts = mg.load_corpus() + [
        "a <x> b   <x>c [Y]   d [Y]e word words sword word. Hello hello HELLO ﬁne fine",
        "<x><x>[Y][Y] wordword word",
    ]
    for name, (tok, trainer, extra) in configs().items():
        tok.train([args.text], trainer)
        if extra is not None or name.startswith(("nfkc", "bytelevel", "wordlevel", "nfd")):
            add_tokens_variants(tok)
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        mg.write_json(os.path.join(d, "golden.json"),
                      mg.golden_for(tok, name, f"trained here on {os.path.basename(args.text)}", texts))
        print(name)


if __name__ == "__main__":
    main()
