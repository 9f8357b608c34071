"""Cohorts: draft a whole study list (``batch``), turn signed reviews into training data (``curate``) and
watch how radiologists change the drafts (``agreement``)."""
