"""Tokenizers: every modality to int32 codes of one shared vocabulary.

One family per module (``text_bpe``, ``image_fsq``, ``video_frames``,
``audio_mel_fsq``, ``audio_encodec``, ``sensor_bins``); the contract is in
``base``; ``registry`` maps family names to classes and loads fitted cards.
"""
from dataengine.tokenize.base import Tokenizer, read_card, sha256_file
from dataengine.tokenize.registry import FAMILIES, get_family, load_tokenizer

__all__ = ["FAMILIES", "Tokenizer", "get_family", "load_tokenizer", "read_card", "sha256_file"]
