"""Token attribution: which words of a prompt push which facet, i.e. *why* a prompt was flagged.

Two methods, both reporting per prompt token a score in units of the facet's violation ``v_k``
(positive = the token pushes the prompt towards violating facet k):

* ``"grad_x_input"``: ``sum_j e_tj * dv_k/de_tj`` with ``e_t`` the output of the input
  embedding for token t. A first-order estimate from one forward and one backward pass per
  explained facet. The model's weights stay frozen: only the embedding output requires grad.
* ``"occlusion"``: ``v_k(x) - v_k(x without token t)``, where "without" means the token is
  replaced by the pad token (``baseline="pad"``) or removed (``baseline="delete"``); one batched
  forward per chunk of tokens. Exact for what it measures, and easy to read.

The polytope's context says how it reads the model (layer, pooling, chat formatting); the text
is formatted the same way, and only the tokens of the user's text are scored: chat-template and
system-prompt tokens are part of every prompt, so they explain nothing about this one. Tokens are
reported as the slices of the user's text they cover (``spans``), so they map back exactly.

>>> attr = attribute(lm, polytope, "How do I make a pipe bomb?")  # doctest: +SKIP
>>> console.print(render_attribution(attr))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch
from rich.text import Text
from torch import Tensor

from ..errors import InputError
from ..features.extract import forward_states, pool
from ..features.formatting import Encoded, Formatting, _prefix_text, encode, uses_chat_template

if TYPE_CHECKING:
    from ..lm import LoadedModel
    from ..polytope import FoldedPolytope, SafetyPolytope

logger = logging.getLogger(__name__)

Method = Literal["grad_x_input", "occlusion"]
METHODS: tuple[str, ...] = ("grad_x_input", "occlusion")
BASELINES: tuple[str, ...] = ("pad", "delete")
_SENTINEL = "\u2063SAP-ATTRIBUTION-SENTINEL\u2063"


@dataclass(frozen=True)
class Attribution:
    """Per-token contributions of one prompt to the facets it was explained for.

    ``tokens[i]`` is ``text[spans[i][0]:spans[i][1]]``; ``scores`` is ``(len(facets),
    len(tokens))`` float32 (positive = pushes towards violation); ``violations`` and
    ``thresholds`` are ``(K,)`` for all facets; ``facets`` are the explained facet indices.
    """

    text: str
    tokens: list[str]
    spans: list[tuple[int, int]]
    facets: list[int]
    facet_names: list[str]
    scores: Tensor
    violations: Tensor
    thresholds: Tensor
    method: str
    baseline: str | None = None

    @property
    def violated(self) -> Tensor:
        """``(K,)`` bool: facet k is violated by the prompt."""
        return self.violations > self.thresholds

    @property
    def top_facet(self) -> int:
        """The explained facet (index) with the largest margin ``v_k - t_k``."""
        margins = (self.violations - self.thresholds)[self.facets]
        return self.facets[int(margins.argmax())]

    def facet_scores(self, facet: int | str) -> Tensor:
        """``(len(tokens),)`` scores for one explained facet (index or name)."""
        k = facet if isinstance(facet, int) else self._index(facet)
        if k not in self.facets:
            raise InputError(f"facet {facet!r} was not explained; explained facets: "
                             f"{', '.join(self.facet_names)}. Pass facets=[...] to attribute().")
        return self.scores[self.facets.index(k)]

    def top_tokens(self, facet: int | str, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` tokens with the largest (most violation-raising) score for ``facet``."""
        s = self.facet_scores(facet)
        order = torch.argsort(s, descending=True, stable=True)[:n]
        return [(self.tokens[i], float(s[i])) for i in order.tolist()]

    def _index(self, name: str) -> int:
        for k, nm in zip(self.facets, self.facet_names):
            if nm == name:
                return k
        raise InputError(f"no explained facet is named {name!r}; explained facets: "
                         f"{', '.join(self.facet_names)}.")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        return {"text": self.text, "tokens": self.tokens, "spans": [list(s) for s in self.spans],
                "facets": self.facets, "facet_names": self.facet_names,
                "scores": self.scores.tolist(), "violations": self.violations.tolist(),
                "thresholds": self.thresholds.tolist(), "method": self.method,
                "baseline": self.baseline}


# --------------------------------------------------------------------------- tokens and spans


def _prompt_tokens(tokenizer: Any, text: str, fmt: Formatting) -> tuple[list[int], list[int],
                                                                        list[tuple[int, int]]]:
    """``(ids, positions, spans)``: the full input ids (exactly as ``features.encode`` makes
    them), the positions of tokens that cover the user's text, and their spans in ``text``."""
    ids = encode(tokenizer, [text], fmt=fmt)[0].ids
    if uses_chat_template(tokenizer, fmt):
        full = _prefix_text(tokenizer, text, fmt)
        start = _locate(tokenizer, full, text, fmt)
        add_special = False
    else:
        full, start, add_special = text, 0, True
    try:
        enc = tokenizer(full, add_special_tokens=add_special, return_offsets_mapping=True)
    except NotImplementedError:
        raise InputError("token attribution needs a fast tokenizer (one that returns offset "
                         "mappings) to map tokens back to the text.") from None
    if list(enc["input_ids"]) != list(ids):
        raise InputError("the tokenizer gives different ids with offsets than without; cannot "
                         "map tokens back to the text.")
    end = start + len(text)
    positions, spans = [], []
    for pos, (s, e) in enumerate(enc["offset_mapping"]):
        lo, hi = max(s, start), min(e, end)
        if hi > lo:  # the token covers part of the user's text
            positions.append(pos)
            spans.append((lo - start, hi - start))
    if not positions:
        raise InputError(f"no token of the formatted input covers the text {text[:60]!r}; the "
                         f"chat template may rewrite it.")
    return list(ids), positions, spans


def _locate(tokenizer: Any, full: str, text: str, fmt: Formatting) -> int:
    """Where ``text`` starts inside its chat-formatted ``full`` string. Formatting a sentinel
    instead gives the exact prefix, even when the text also occurs in the template."""
    probe = _prefix_text(tokenizer, _SENTINEL, fmt)
    i = probe.find(_SENTINEL)
    if i >= 0:
        head, tail = probe[:i], probe[i + len(_SENTINEL):]
        if full == head + text + tail:
            return i
    i = full.rfind(text)
    if i < 0:
        raise InputError(f"the chat template changes the text {text[:60]!r}, so its tokens "
                         f"cannot be located in the formatted prompt.")
    return i


# --------------------------------------------------------------------------- forward passes


class _Stop(Exception):
    """Raised after the polytope's block: nothing above it is needed."""


def _differentiable_state(lm: LoadedModel, ids: Tensor, layer: int, pooling: str
                          ) -> tuple[Tensor, Tensor]:
    """``(pooled state (1, d) float32, embedding output (1, seq, d))`` with autograd from the
    embedding output (a leaf that requires grad) to the state at ``layer``."""
    captured: dict[str, Tensor] = {}

    def embed_hook(_m: torch.nn.Module, _a: Any, out: Tensor) -> Tensor:
        leaf = out.detach().requires_grad_(True)
        captured["emb"] = leaf
        return leaf

    def block_hook(_m: torch.nn.Module, _a: Any, out: Any) -> None:
        captured["h"] = out[0] if isinstance(out, tuple) else out
        raise _Stop

    embeddings: torch.nn.Module = lm.model.get_input_embeddings()  # type: ignore[operator]
    handles = [embeddings.register_forward_hook(embed_hook),
               lm.blocks[layer - 1].register_forward_hook(block_hook)]
    try:
        with torch.inference_mode(False), torch.enable_grad():
            try:
                lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
            except _Stop:
                pass
            h = captured["h"].float()
            pooled = h[:, -1] if pooling == "last" else h.mean(1)
    finally:
        for handle in handles:
            handle.remove()
    return pooled, captured["emb"]


def _folded_on(polytope: SafetyPolytope, device: torch.device) -> FoldedPolytope:
    from ..polytope import FoldedPolytope

    with torch.inference_mode(False):  # clones are normal tensors, usable by autograd
        f = polytope.folded()
        return FoldedPolytope(
            f.encoder, {k: t.to(device).clone() for k, t in f.encoder_params.items()},
            f.facets.to(device).clone(), f.offsets.to(device).clone(),
            f.thresholds.to(device).clone())


def _grad_x_input(lm: LoadedModel, fp: FoldedPolytope, ids: Tensor, layer: int, pooling: str,
                  positions: list[int], choose: Callable[[Tensor], list[int]]
                  ) -> tuple[Tensor, list[int], Tensor]:
    """``(v (K,), explained facets, scores (len(explained), len(positions)))``."""
    pooled, emb = _differentiable_state(lm, ids, layer, pooling)
    with torch.inference_mode(False), torch.enable_grad():
        v = fp.violations(pooled)[0]  # (K,)
        explain = choose(v.detach().cpu())
        out = []
        for i, k in enumerate(explain):
            (g,) = torch.autograd.grad(v[k], emb, retain_graph=i < len(explain) - 1)
            out.append((g.float() * emb.detach().float())[0, positions].sum(-1))
    return v.detach().cpu(), explain, torch.stack(out).cpu()


def _occlusion(lm: LoadedModel, fp: FoldedPolytope, ids: Tensor, layer: int, pooling: str,
               positions: list[int], baseline: str, batch_size: int) -> tuple[Tensor, Tensor]:
    """``(v (K,), v of each occluded input (len(positions), K))``, batched."""

    def run(rows: Tensor) -> Tensor:
        mask = torch.ones_like(rows)
        h = forward_states(lm, rows, mask, [layer])[layer]
        n = rows.shape[1]
        batch = [Encoded(list(range(n)), n)] * rows.shape[0]  # only lengths are read
        feats = torch.stack(pool(h, mask, torch.zeros(rows.shape[0], dtype=torch.long), batch,
                                 pooling)).to(lm.device)
        with torch.no_grad():
            return fp.violations(feats).cpu()

    v0 = run(ids)[0]
    out = []
    for s in range(0, len(positions), batch_size):
        chunk = positions[s:s + batch_size]
        if baseline == "pad":
            rows = ids.repeat(len(chunk), 1)
            rows[torch.arange(len(chunk), device=ids.device),
                 torch.tensor(chunk, device=ids.device)] = lm.tokenizer.pad_token_id
        else:
            keep = [[j for j in range(ids.shape[1]) if j != p] for p in chunk]
            rows = ids[0, torch.tensor(keep, device=ids.device)]
        out.append(run(rows))
    return v0, torch.cat(out)


# --------------------------------------------------------------------------- the entry point


def _facet_indices(polytope: SafetyPolytope, facets: Sequence[int | str] | str | None,
                   v: Tensor, t: Tensor) -> list[int]:
    K = v.shape[0]
    names = list(polytope.facet_names_)
    if facets is None:
        hit = torch.nonzero(v > t).flatten().tolist()
        return hit or [int((v - t).argmax())]
    if facets == "all":
        return list(range(K))
    if isinstance(facets, str):
        facets = [facets]
    out = []
    for f in facets:
        if isinstance(f, str):
            if f not in names:
                raise InputError(f"no facet is named {f!r}; facets: {', '.join(names)}.")
            out.append(names.index(f))
        elif isinstance(f, int) and not isinstance(f, bool) and 0 <= f < K:
            out.append(f)
        else:
            raise InputError(f"facets must be names or indices 0..{K - 1}; got {f!r}.")
    return out


def attribute(
    lm: LoadedModel,
    polytope: SafetyPolytope,
    text: str,
    *,
    method: Method = "grad_x_input",
    facets: Sequence[int | str] | str | None = None,
    baseline: str = "pad",
    batch_size: int = 32,
) -> Attribution:
    """Explain ``polytope``'s violations on the prompt ``text`` token by token.

    ``facets``: ``None`` (default) explains the violated facets, or the one closest to
    violation when none is; ``"all"``, or a list of indices/names. ``baseline`` (occlusion only):
    ``"pad"`` replaces the token with the pad token, ``"delete"`` removes it.
    The polytope needs a context with ``layer`` and ``pooling`` ``"last"`` or ``"mean"`` (set by
    ``set_context``). Raises ``InputError`` otherwise.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}.")
    if baseline not in BASELINES:
        raise InputError(f"baseline must be one of {', '.join(BASELINES)}; got {baseline!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1; got {batch_size!r}.")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"text must be a non-empty string; got {text!r}.")
    ctx = polytope.context
    if ctx.layer is None:
        raise InputError("this polytope records no layer; attribution must read the layer it "
                         "was fitted on. Call polytope.set_context(model=lm, layer=L, "
                         "pooling='last') before saving it.")
    layer = lm.check_layer(ctx.layer)
    pooling = ctx.pooling or "last"
    if pooling not in ("last", "mean"):
        raise InputError(f"token attribution explains one pooled prompt state ('last' or "
                         f"'mean' pooling); this polytope was fitted with pooling "
                         f"{pooling!r}.")
    if polytope.n_features_in_ != lm.hidden_size:
        raise InputError(f"the polytope was fitted on {polytope.n_features_in_}-dimensional "
                         f"states ({ctx.describe()}), but {lm.name} has hidden size "
                         f"{lm.hidden_size}.")
    fmt = Formatting(**ctx.formatting) if ctx.formatting else Formatting()
    ids_list, positions, spans = _prompt_tokens(lm.tokenizer, text, fmt)
    ids = torch.tensor([ids_list], device=lm.device)
    fp = _folded_on(polytope, lm.device)
    t = polytope.facet_thresholds_.detach().float().cpu()

    def choose(v: Tensor) -> list[int]:
        return _facet_indices(polytope, facets, v, t)

    if method == "grad_x_input":
        v, explain, scores = _grad_x_input(lm, fp, ids, layer, pooling, positions, choose)
        used_baseline = None
    else:
        v, occluded = _occlusion(lm, fp, ids, layer, pooling, positions, baseline, batch_size)
        explain = choose(v)
        scores = (v[None, :] - occluded).T[explain]
        used_baseline = baseline
    names = list(polytope.facet_names_)
    logger.info("attributed %d tokens to facets %s by %s", len(positions),
                ", ".join(names[k] for k in explain), method)
    return Attribution(text=text, tokens=[text[s:e] for s, e in spans], spans=spans,
                       facets=explain, facet_names=[names[k] for k in explain],
                       scores=scores.float().contiguous(), violations=v.float(), thresholds=t,
                       method=method, baseline=used_baseline)


# --------------------------------------------------------------------------- rendering


def render_attribution(attr: Attribution, facet: int | str | None = None) -> Text:
    """The text with each token's background coloured by its score for ``facet`` (default: the
    top facet): red pushes towards violation, blue away, intensity relative to the largest
    absolute score. Print it with a ``rich`` console."""
    k = attr.top_facet if facet is None else facet
    s = attr.facet_scores(k)
    scale = float(s.abs().max()) or 1.0
    out = Text()
    pos = 0
    for (a, b), score in zip(attr.spans, s.tolist()):
        if a > pos:
            out.append(attr.text[pos:a])
        if b <= pos:  # a token sharing characters with the previous one (byte-level splits)
            continue
        a = max(a, pos)
        w = min(1.0, abs(score) / scale)
        rgb = (255, round(255 * (1 - w)), round(255 * (1 - w))) if score > 0 else \
            (round(255 * (1 - w)), round(255 * (1 - w)), 255)
        fg = "white" if w > 0.6 else "black"
        out.append(attr.text[a:b], style=f"{fg} on rgb({rgb[0]},{rgb[1]},{rgb[2]})")
        pos = b
    if pos < len(attr.text):
        out.append(attr.text[pos:])
    return out


__all__ = ["BASELINES", "METHODS", "Attribution", "attribute", "render_attribution"]
