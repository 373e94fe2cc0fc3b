"""Turn prompts (and optional responses) into token ids the way the model sees them in chat.

Why ids and not strings: the prompt/response boundary must be exact for per-token features, and
re-tokenising a concatenated string can merge tokens across it. So the chat-formatted prefix and
the response are tokenised separately and joined.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class Formatting:
    """How text becomes model input; part of every feature-cache key and artifact config."""

    chat_template: bool = True  # applied only when the tokenizer has one
    system_prompt: str | None = None  # None: the template's own default
    max_length: int | None = None  # None: the model's context length

    def to_dict(self) -> dict[str, Any]:
        return {"chat_template": self.chat_template, "system_prompt": self.system_prompt,
                "max_length": self.max_length}


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example; ``response_start`` is where response tokens begin (or len)."""

    ids: list[int]
    response_start: int


def uses_chat_template(tokenizer: Any, fmt: Formatting) -> bool:
    return fmt.chat_template and bool(getattr(tokenizer, "chat_template", None))


def _prefix_text(tokenizer: Any, prompt: str, fmt: Formatting) -> str:
    messages = []
    if fmt.system_prompt is not None:
        messages.append({"role": "system", "content": fmt.system_prompt})
    messages.append({"role": "user", "content": prompt})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str] | None = None,
    fmt: Formatting = Formatting(),
    context_length: int | None = None,
) -> list[Encoded]:
    """Encode prompts (chat-formatted when the tokenizer has a template) plus optional responses.

    With a response the sequence is ``prefix + response`` with no end-of-turn token, so the last
    token is the last response token, as it is while the model is generating.
    Raises ``InputError`` for an example longer than ``fmt.max_length`` or ``context_length``.
    """
    if responses is not None and len(responses) != len(prompts):
        raise InputError(f"{len(prompts)} prompts but {len(responses)} responses; pass one "
                         f"response per prompt (or none).")
    chat = uses_chat_template(tokenizer, fmt)
    limit = fmt.max_length or context_length
    out: list[Encoded] = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"prompt #{i} is empty or not a string ({prompt!r}); every example "
                             f"needs non-empty text.")
        if chat:
            ids = tokenizer(_prefix_text(tokenizer, prompt, fmt), add_special_tokens=False)
        else:
            ids = tokenizer(prompt, add_special_tokens=True)
        ids = list(ids["input_ids"])
        start = len(ids)
        if responses is not None and responses[i]:
            ids += list(tokenizer(responses[i], add_special_tokens=False)["input_ids"])
        if limit is not None and len(ids) > limit:
            raise InputError(
                f"example #{i} is {len(ids)} tokens long, over the limit of {limit} "
                f"({'max_length' if fmt.max_length else 'the model context length'}); shorten it "
                f"or raise max_length. Text starts: {prompt[:60]!r}"
            )
        out.append(Encoded(ids, start))
    return out
