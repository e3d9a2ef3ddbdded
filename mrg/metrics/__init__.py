"""Scores for generated reports: the field's NLG metrics and clinical efficacy.

* ``mrg.metrics.nlg`` -- BLEU-1..4, ROUGE-L and CIDEr-D, equal to the pycocoevalcap scorers (to 1e-9) but
  computed in one pass that counts each report's n-grams once; per-item sufficient statistics for resampling.
* ``mrg.metrics.meteor`` -- METEOR 1.5 from the jar shipped in pycocoevalcap, in one warm JVM per process
  with sanitised input, a watchdog and clean shutdown.
* ``mrg.metrics.ptb`` -- the Stanford PTB tokenizer of the COCO protocol, without writing into site-packages.
* ``mrg.metrics.stats`` -- bootstrap confidence intervals and paired significance tests over per-item statistics.
* ``mrg.metrics.java`` -- finding ``java`` and the jars inside the installed pycocoevalcap package.
* ``mrg.metrics.labeler`` / ``mrg.metrics.clinical`` -- the CheXpert-style labeler and clinical efficacy.

Submodules are imported on demand; importing ``mrg.metrics`` itself is cheap.
"""
