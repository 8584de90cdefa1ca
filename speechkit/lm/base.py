"""The language-model protocol the beam decoder fuses with: batched, incremental scoring.

A decoder keeps one LM *state* per hypothesis (batch × beam of them, flattened to ``N``) and
asks the LM for log-probabilities of the next unit, all hypotheses at once. The state is
opaque to the decoder: a tensor, a tuple of tensors, anything the LM can gather and advance.
Every method works on whole batches; nothing is called once per hypothesis.

One frame of beam search calls, in this order::

    lp = lm.logprobs(state, ids)            # (N, M) log P(ids[i, m] | state i)
    state = lm.select(state, parent)        # (N',) which old hypothesis each new one extends
    state = lm.advance(state, unit, mask)   # append unit[i] where mask[i]; others unchanged

and once at the end ``lm.end_logprobs(state)`` (log P(</s> | state)). Probabilities are
natural logarithms (ARPA files hold log10; an LM converts when it reads them).

``unit`` says what the LM predicts:

- ``"char"``: one unit per output token. The decoder asks for every token of its alphabet
  at every frame (``ids`` is ``(N, V)``) and advances by the token a hypothesis emits. The
  word separator is a unit too: ``index([" "])`` gives the LM's own id for it. A character
  RNN implements this naturally: keep ``(h, c)`` *and* the next-unit log-softmax in the
  state, so ``logprobs`` is a gather and ``advance`` is one LSTM step on the rows in ``mask``.
- ``"word"``: the decoder asks only when a hypothesis completes a word (``ids`` is
  ``(N, 1)``) and advances by that word. It must expose ``vocab`` (its words) so the decoder
  can map spelled-out words to LM ids.

A minimal char RNN LM (sketch)::

    class CharRNNLM(LanguageModel):
        unit = "char"
        def index(self, symbols): return torch.tensor([self.stoi.get(s, self.unk) for s in symbols])
        def start(self, n, device):             # feed <s>
            h = self.init(n, device); return self.step(h, torch.full((n,), self.bos, device=device))
        def logprobs(self, state, ids): return state.logp.gather(1, ids)   # state.logp: (N, U)
        def end_logprobs(self, state): return state.logp[:, self.eos]
        def select(self, state, index): return state.index_select(index)  # gather h, c, logp
        def advance(self, state, ids, mask): return state.where(mask, self.step(state, ids))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

LMState = Any  # whatever the LM keeps per hypothesis; the decoder only passes it back


class LanguageModel:
    """Base of ``lm`` plugins: batched incremental scoring over per-hypothesis states.

    Subclasses set :attr:`unit` and implement the six methods below; ``vocab`` is needed
    for word-level LMs (the decoder spells each word to find it).
    """

    unit: str = "char"  # "char" or "word": what one LM step predicts
    vocab: list[str] = []  # the LM's units by id (words for a word LM)

    def index(self, symbols: Sequence[str]) -> Tensor:
        """LM ids ``(len(symbols),)`` of decoder symbols (chars) or words; unknown ones → ``<unk>``."""
        raise NotImplementedError

    def start(self, n: int, device: torch.device | str = "cpu") -> LMState:
        """``n`` states at the start of a sentence (after ``<s>``)."""
        raise NotImplementedError

    def logprobs(self, state: LMState, ids: Tensor) -> Tensor:
        """``ids`` ``(N, M)`` LM ids → ``(N, M)`` natural-log P(ids[i, m] | state i)."""
        raise NotImplementedError

    def end_logprobs(self, state: LMState) -> Tensor:
        """``(N,)`` natural-log P(</s> | state i)."""
        raise NotImplementedError

    def select(self, state: LMState, index: Tensor) -> LMState:
        """The states ``state[index]`` (``index`` ``(N',)`` long): reorders hypotheses after pruning."""
        raise NotImplementedError

    def advance(self, state: LMState, ids: Tensor, mask: Tensor) -> LMState:
        """Append unit ``ids[i]`` to hypothesis ``i`` where ``mask[i]`` (``(N,)`` bool); keep the others."""
        raise NotImplementedError

    def sentence_logprob(self, units: Sequence[str]) -> float:
        """Natural-log probability of a whole sentence (its units, then ``</s>``); for tests and tools."""
        state = self.start(1)
        total = 0.0
        for u in self.index(units).tolist():
            ids = torch.tensor([u])
            total += float(self.logprobs(state, ids[:, None])[0, 0])
            state = self.advance(state, ids, torch.ones(1, dtype=torch.bool))
        return total + float(self.end_logprobs(state)[0])
