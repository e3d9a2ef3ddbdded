"""Metrics: NLG scores (pycocoevalcap-exact), the in-project CheXpert-style labeler and clinical efficacy."""
