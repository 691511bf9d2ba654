"""Tokenizer evaluation: reconstruction quality, codebook use, speed, and same-bits baselines.

One module per modality (``image``, ``video``, ``audio``, ``sensor``; ``text``
holds the SentencePiece baseline), pure metric helpers in ``metrics``, and
``run`` (a workflow: import it as ``dataengine.evaluate.run``) with the two entry points:

- ``evaluate_tokenizers(tokdir, recipe, inputs, *, use_all, log)``: every
  fitted tokenizer of a folder on held-out inputs (`dataengine tokenizers eval`);
- ``evaluate_role(role, tokenizer, eval_items, *, fit_items, resources)``: one
  tokenizer on already-decoded items (for fitting to write ``eval.json``).
"""
