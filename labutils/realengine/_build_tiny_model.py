"""Build a tiny random-weight Llama model with its own tokenizer (runs inside the vLLM venv).

Standalone script: it imports only ``torch``, ``tokenizers`` and ``transformers`` (present in the
vLLM CPU venv, absent from the lab's venv) and never the ``labutils`` package. The lab calls it
through :func:`labutils.realengine.model.build_tiny_model`.

Usage: python _build_tiny_model.py OUT_DIR --corpus FILE [--seed N] [--hidden-size N] ...
Prints one JSON line describing the model on success.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]
# Each message: a role marker line, its content, then the end-of-sequence token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n"
    "{{ message['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _train_tokenizer(corpus: str, vocab_size: int, seed: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # The trainer is deterministic for a fixed input order; the seed shuffles paragraphs so
    # different seeds give (slightly) different merges.
    paragraphs = [p for p in corpus.split("\n\n") if p.strip()]
    random.Random(seed).shuffle(paragraphs)
    tokenizer.train_from_iterator(paragraphs, trainer=trainer)
    return tokenizer


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--intermediate-size", type=int, default=256)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--num-heads", type=int, default=4)
    parser.add_argument("--num-kv-heads", type=int, default=2)
    parser.add_argument("--max-position-embeddings", type=int, default=1024)
    args = parser.parse_args(argv)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer_core = _train_tokenizer(args.corpus.read_text(), args.vocab_size, args.seed)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=args.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    vocab_size = len(tokenizer)

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden_size,
        intermediate_size=args.intermediate_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        num_key_value_heads=args.num_kv_heads,
        max_position_embeddings=args.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    model.eval()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out_dir, safe_serialization=True)
    tokenizer.save_pretrained(args.out_dir)

    weights = args.out_dir / "model.safetensors"
    info = {
        "path": str(args.out_dir.resolve()),
        "seed": args.seed,
        "vocab_size": vocab_size,
        "hidden_size": args.hidden_size,
        "num_layers": args.num_layers,
        "num_heads": args.num_heads,
        "max_model_len": args.max_position_embeddings,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "weights_sha256": _sha256(weights),
        "tokenizer_sha256": _sha256(args.out_dir / "tokenizer.json"),
        "corpus_sha256": _sha256(args.corpus),
        "vocab_size_limit": args.vocab_size,
    }
    (args.out_dir / "lab-tiny-model.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
