"""MMLU-dev-281: the multiple-choice questions inside lm-eval's chain-of-thought few-shot
prompts, used as a utility proxy (does steering hurt ordinary capability?).

``_cot_prompts.json`` maps 57 subjects to one prompt string each: a header line, then blocks
``Q: <question>\\n(A) .. (B) .. (C) .. (D) ..\\nA: Let's think step by step. ... The answer
is (X).`` separated by blank lines. 282 blocks hold 281 distinct questions (college_physics
repeats one); one question has five options (A-E).
"""

from __future__ import annotations

import re

from ..errors import AssetError
from . import taxonomy
from ._read import json_member, log_loaded
from .records import SAFE, Record

LM_EVAL = "lm-eval"
MMLU_MEMBER = "lm_eval/tasks/mmlu/flan_cot_fewshot/_cot_prompts.json"
N_MMLU_DEV = 281

_BLOCK = re.compile(r"(?:^|\n)Q: (.*?)\nA: (.*?)(?=\n\nQ: |\Z)", re.DOTALL)
_CHOICES_LINE = re.compile(r"\n(\(A\) .*)\Z", re.DOTALL)
_CHOICE = re.compile(r"\(([A-J])\) ")
_ANSWER = re.compile(r"The answer is \(([A-J])\)")
# Backslash escapes the JSON lost in LaTeX ("\frac" became form feed + "rac"): put them back.
_LOST_ESCAPES = {"\x0c": "\\f", "\x08": "\\b", "\x0b": "\\v", "\x07": "\\a"}


def _repair(text: str) -> str:
    for ch, esc in _LOST_ESCAPES.items():
        text = text.replace(ch, esc)
    return re.sub(r"\r(?=[a-z])", r"\\r", text)


def parse_cot_prompt(subject: str, text: str) -> list[dict[str, object]]:
    """Questions of one subject's prompt: dicts with question, choices, answer, rationale."""
    out = []
    for m in _BLOCK.finditer(_repair(text)):
        body, answer_part = m.group(1), m.group(2)
        cm = _CHOICES_LINE.search(body)
        answers = _ANSWER.findall(answer_part)
        if cm is None or not answers:
            raise ValueError(f"MMLU subject {subject!r}: cannot parse block {body[:60]!r}")
        question = body[: cm.start()].strip()
        parts = _CHOICE.split(cm.group(1))[1:]  # [letter, text, letter, text, ...]
        letters, choices = parts[0::2], tuple(p.strip() for p in parts[1::2])
        expected = [chr(ord("A") + i) for i in range(len(letters))]
        if letters != expected or answers[-1] not in letters:
            raise ValueError(f"MMLU subject {subject!r}: bad options {letters} / {answers}")
        rationale = answer_part.removeprefix("Let's think step by step.").strip()
        out.append({"subject": subject, "question": question, "choices": choices,
                    "answer": answers[-1], "rationale": rationale})
    return out


def format_mcq(question: str, choices: tuple[str, ...]) -> str:
    lines = [question] + [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)]
    return "\n".join(lines)


def load_mmlu_dev() -> list[Record]:
    prompts: dict[str, str] = json_member(LM_EVAL, MMLU_MEMBER)
    seen: set[tuple[str, str]] = set()
    out: list[Record] = []
    for subject in sorted(prompts):
        for q in parse_cot_prompt(subject, prompts[subject]):
            key = (subject, str(q["question"]))
            if key in seen:
                continue
            seen.add(key)
            choices = q["choices"]
            assert isinstance(choices, tuple)
            out.append(Record(id=f"mmlu-dev-281-{len(out)}",
                              prompt=format_mcq(str(q["question"]), choices), label=SAFE,
                              category=taxonomy.BENIGN, source="mmlu-dev-281",
                              meta={"subject": subject, "question": q["question"],
                                    "choices": choices, "answer": q["answer"],
                                    "rationale": q["rationale"]}))
    if len(out) != N_MMLU_DEV:
        raise AssetError(f"Parsed {len(out)} MMLU development questions from {MMLU_MEMBER}, "
                         f"expected {N_MMLU_DEV}; the pinned lm-eval file changed.")
    log_loaded("mmlu-dev-281", len(out))
    return out
