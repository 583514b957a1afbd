"""Re-ranking after the first search: query expansion (``aqe``, ``qe``), database-side
augmentation (``dba``), global-feature re-ranking (``gfr``) and k-reciprocal re-ranking
(``kreciprocal``), composed in the order ``--rerank`` names them. A preset may bundle
steps (``Preset.rerank``): a search runs them unless told others (``resolve``; 'none' for
no re-ranking).

    pipeline = imret.rerank.Pipeline.parse("dba:k=3,aqe:n=3,alpha=3")
    index.search_image("query.jpg", top=10, rerank=pipeline)   # or rerank="dba:k=3,aqe:n=3,alpha=3"
    evaluate(extractor, dataset, rerank=pipeline)

Each step is a frozen dataclass registered in ``STEPS``; its pure core is in
``imret.rerank.functional`` (float32 rows in, float32 rows out, no loop over the database).
"""
from .augmented import AugmentedRows
from .pipeline import DEFAULT_DEPTH, FROM_PRESET, NO_RERANK, Pipeline, resolve
from .steps import (DBA, STEPS, AlphaQE, AverageQE, Database, GlobalFeatureRerank, KReciprocal, Shortlist, Step,
                    make_step, parse_steps)

__all__ = ["AlphaQE", "AugmentedRows", "AverageQE", "DBA", "Database", "DEFAULT_DEPTH", "FROM_PRESET",
           "GlobalFeatureRerank", "KReciprocal", "NO_RERANK", "Pipeline", "STEPS", "Shortlist", "Step", "make_step",
           "parse_steps", "resolve"]
