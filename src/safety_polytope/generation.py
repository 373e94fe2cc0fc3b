"""Batched generation that sees exactly the prompt states the features see.

Why not ``tokenizer(...)`` + ``model.generate`` as usual: the polytope is trained on hidden states
of ``features.formatting.encode``'s token ids, so generation starts from those same ids. They are
left-padded here by hand (``features.extract.pad_batch``), which leaves the user's tokenizer, its
``padding_side`` included, untouched. ``model.generate`` runs unchanged: no copied decoder loop.

Prompts are sorted by length into batches (little padding) and results come back in input order.
Greedy by default; sampling is seeded inside ``torch.random.fork_rng``, so it is reproducible and
does not disturb the caller's global RNG.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from .errors import InputError
from .features.extract import length_batches, pad_batch
from .features.formatting import Formatting, encode
from .lm import LoadedModel
from .progress import progress_bar

logger = logging.getLogger(__name__)

#: The default ``Formatting`` (chat template on, the template's own system prompt).
DEFAULT_FORMATTING = Formatting()

#: End-of-turn tokens of common chat templates; any that the vocabulary holds stops generation.
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>",
                                       "<|end|>", "<|endoftext|>", "</s>")


def stop_token_ids(lm: LoadedModel) -> list[int]:
    """Token ids that end a reply: the tokenizer's and generation config's EOS, plus any
    end-of-turn special token of the chat template that the vocabulary knows.

    Why more than ``eos_token_id``: a chat model ends its turn with the template's end token,
    which is not always the tokenizer's EOS (Llama-3 ``<|eot_id|>``, Gemma ``<end_of_turn>``).
    """
    tok = lm.tokenizer
    ids: list[int] = []

    def add(value: Any) -> None:
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, int) and v >= 0 and v not in ids:
                ids.append(v)

    add(tok.eos_token_id)
    add(getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None))
    special = set(getattr(tok, "all_special_tokens", []) or [])
    special |= {str(t) for t in (getattr(tok, "added_tokens_decoder", {}) or {}).values()}
    unk = tok.unk_token_id
    for token in END_OF_TURN_TOKENS:
        if token in special:
            tid = tok.convert_tokens_to_ids(token)
            if tid is not None and tid != unk:
                add(tid)
    if not ids:
        raise InputError(f"Cannot tell when {lm.name} ends a reply: its tokenizer has no EOS "
                         f"token and none of {', '.join(END_OF_TURN_TOKENS)} is in its "
                         f"vocabulary. Set tokenizer.eos_token before generating.")
    return ids


def _check(max_new_tokens: int, batch_size: int, temperature: float, top_p: float) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or \
            max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be an int >= 1; got {max_new_tokens!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    if not temperature >= 0:
        raise InputError(f"temperature must be >= 0 (0 = greedy); got {temperature!r}.")
    if not 0 < top_p <= 1:
        raise InputError(f"top_p must be in (0, 1]; got {top_p!r}.")


def generate_ids(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    formatting: Formatting = DEFAULT_FORMATTING,
    show_progress: bool = True,
) -> list[list[int]]:
    """New token ids per prompt, in input order, cut before the first stop token.

    Same arguments as ``generate_batch``; use this when exact token ids matter (tests, per-token
    features of exactly what the model produced).
    """
    _check(max_new_tokens, batch_size, temperature, top_p)
    if len(prompts) == 0:
        return []
    from transformers import GenerationConfig

    context = getattr(lm.model.config, "max_position_embeddings", None)
    encoded = encode(lm.tokenizer, prompts, None, formatting, context)
    stops = stop_token_ids(lm)
    pad_id = lm.tokenizer.pad_token_id
    if pad_id is None:
        raise InputError(f"The tokenizer of {lm.name} has no pad token; load the model with "
                         f"safety_polytope.load_model/wrap_model, which sets one.")
    sample = temperature > 0
    # Every setting that changes which token is picked is set here, so the model's own
    # generation_config (sampling, top_k, repetition penalties, beams...) cannot change what
    # "greedy" or "seeded sampling" means; unset fields would be filled from it.
    config = GenerationConfig(
        max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=sample, num_beams=1,
        num_return_sequences=1, temperature=temperature if sample else 1.0,
        top_p=top_p if sample else 1.0, top_k=0 if sample else 50, min_p=None, typical_p=1.0,
        repetition_penalty=1.0, no_repeat_ngram_size=0, eos_token_id=stops,
        pad_token_id=pad_id, bos_token_id=lm.tokenizer.bos_token_id, use_cache=True,
    )
    out: list[list[int] | None] = [None] * len(prompts)
    device = lm.device
    model: Any = lm.model  # typed nn.Module; generate() comes from transformers' mixin
    fork_devices = [device] if device.type == "cuda" else []
    stop_set = set(stops)
    with progress_bar("Generating", total=len(prompts), disable=not show_progress) as advance, \
            torch.random.fork_rng(devices=fork_devices), torch.inference_mode():
        torch.manual_seed(seed)
        for idx in length_batches(encoded, batch_size, None):
            batch = [encoded[i] for i in idx]
            ids, mask, _ = pad_batch(batch, pad_id, "left", device)
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            new = gen[:, ids.shape[1]:].tolist()
            for i, row in zip(idx, new):
                cut = next((j for j, t in enumerate(row) if t in stop_set), len(row))
                out[i] = row[:cut]
            advance(len(idx))
    return out  # type: ignore[return-value]


def generate_batch(
    lm: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 48,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    formatting: Formatting = DEFAULT_FORMATTING,
    show_progress: bool = True,
) -> list[str]:
    """The model's reply to each prompt, chat-formatted like ``features.formatting.encode``.

    Greedy when ``temperature == 0`` (default); else nucleus sampling (``top_p``) seeded by
    ``seed``, reproducible for the same prompts and ``batch_size``. Generation stops at the EOS
    or end-of-turn token; only the new tokens are decoded (special tokens skipped) and stripped.
    Rows of a batch are left-padded with an attention mask, so a greedy reply equals the reply
    to the prompt run alone. Raises ``InputError`` for empty prompts or bad settings.

    >>> generate_batch(lm, ["How do I bake bread?"], max_new_tokens=16)  # doctest: +SKIP
    ['To bake bread, you will need flour, water, yeast and salt.']
    """
    ids = generate_ids(lm, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       temperature=temperature, top_p=top_p, seed=seed, formatting=formatting,
                       show_progress=show_progress)
    return [lm.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
