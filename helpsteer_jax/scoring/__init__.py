"""Scoring answers with a model: the selectors the search, RLOO, annotation and local judges use."""
