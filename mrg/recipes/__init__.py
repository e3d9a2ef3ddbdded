"""Recipes: each command as ``setup(config) -> run()`` over the library (torchtune recipes, litgpt ``setup``)."""
