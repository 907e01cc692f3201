"""The zero-cost evaluator: a proxy's score of the untrained network, no training."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.evaluators._evaluate import sample_batches
from autoprune.evaluators._evaluator import Evaluator, register_evaluator
from autoprune.evaluators._proxies import ProxyInputs, list_proxies, proxy_score
from autoprune.evaluators._records import EvalResult
from autoprune.evaluators._train import EpochHook
from autoprune.spaces import Candidate, build_model

__all__ = ["Proxy"]

#: Images in the batch of data-dependent proxies (NASWOT; its score's scale depends on it).
_BATCH = 64


@register_evaluator("proxy")
class Proxy(Evaluator):
    """A zero-cost score at initialisation (synflow or NASWOT); no training."""

    trains = False

    @dataclass(frozen=True)
    class Settings:
        """``proxy``: the registered proxy to score with (``list_proxies()``)."""

        proxy: str = "log_synflow"

        def __post_init__(self) -> None:
            if self.proxy not in list_proxies():
                raise ConfigError(
                    f"unknown evaluator.proxy.proxy {self.proxy!r}; valid proxies: "
                    f"{', '.join(list_proxies())}"
                )

    def describe(self) -> str:
        return f"proxy ({self.settings.proxy} at initialisation, no training)"

    def evaluate(
        self, candidate: Candidate, *, seed: int, on_epoch: EpochHook | None = None
    ) -> tuple[nn.Module, EvalResult]:
        model = build_model(candidate, seed=seed)
        hw = self.fidelity.train_hw(candidate.input_shape[1:])
        shape = (candidate.input_shape[0], *hw)
        inputs = ProxyInputs(shape=shape, batch=lambda: self._batch(hw, seed))
        score = proxy_score(self.settings.proxy)(model, inputs)
        if not math.isfinite(score):
            score = -1e9  # every path dead / identical activation patterns: ranks last
        return model, EvalResult(
            accuracy=score,
            split="val",
            fidelity=self.fidelity,
            input_hw=hw,
            train_seconds=0.0,
            images_per_second=0.0,
            epochs=0,
            samples=0,
            seed=seed,
            train_loss=math.nan,
            evaluator=self.name,
            metric=self.settings.proxy,
        )

    def _batch(self, hw: tuple[int, int], seed: int) -> torch.Tensor:
        """``_BATCH`` training images drawn with ``seed``, normalised, at ``hw``."""
        return sample_batches(self.data(), _BATCH, hw, seed=seed, batch_size=_BATCH)[0][0]
