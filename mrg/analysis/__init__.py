"""``mrg analyze``: what a method's soft tokens encode and where its LLM looks (``docs/analysis.md``).

Two analyses of a checkpoint on the first studies of a dataset split, for every method that declares soft-token
groups (``Method.soft_token_groups``: visual tokens, customised prompts, clues):

* ``prompts`` (``mrg.analysis.prompts``): nearest vocabulary tokens, norms, similarity across studies against label
  overlap, effective rank and PCA spectrum, promptbook mixing weights by finding;
* ``attention`` (``mrg.analysis.attention``): attention mass on each input group during greedy generation, per layer
  and head, per position and per generated token, and heat maps of the attention on the image patches.

The output folder holds ``analysis.json`` and PNG figures (``mrg.analysis.png``); ``mrg report`` shows it.

Public API:
    analyze(kind, checkpoint, out=..., split=...) -> AnalysisResult
    AnalysisRecipe.setup(AnalysisConfig(...)).run()
"""

from __future__ import annotations

from mrg.analysis.run import ANALYSIS_NAME, KINDS, AnalysisConfig, AnalysisRecipe, AnalysisResult, analyze

__all__ = ["ANALYSIS_NAME", "KINDS", "AnalysisConfig", "AnalysisRecipe", "AnalysisResult", "analyze"]
