import numpy as np
import pytest

from elmobatch.encoding.tokens import char_ids, is_blank, tokenize


def test_whitespace_tokenizer_matches_hub_default():
    assert tokenize("Ok lar... Joking wif u oni...", "whitespace") == ["Ok", "lar...", "Joking", "wif", "u", "oni..."]


def test_punct_tokenizer_splits_punctuation_keeps_urls_and_numbers():
    text = "WINNER!! Call 09061701461 now, claim £900 at http://www.sms.ac/u/bootydelious ok? U.S. don't 6-3"
    assert tokenize(text, "punct") == [
        "WINNER", "!!", "Call", "09061701461", "now", ",", "claim", "£", "900", "at",
        "http://www.sms.ac/u/bootydelious", "ok", "?", "U.S", ".", "don't", "6-3",
    ]
    assert tokenize("Ok lar...", "punct") == ["Ok", "lar", "..."]


def test_empty_text_has_no_tokens():
    assert tokenize("", "punct") == [] and tokenize("   ", "whitespace") == []


def test_unknown_tokenizer():
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe'"):
        tokenize("x", "bpe")


def test_char_ids_layout():
    ids = char_ids([["ab"], []], max_chars=6)
    assert ids.shape == (2, 3, 6)
    # <S>, then "ab" as [bow, a, b, eow, pad, pad], then </S>; every id shifted by +1.
    np.testing.assert_array_equal(ids[0, 0], np.array([258, 256, 259, 260, 260, 260]) + 1)
    np.testing.assert_array_equal(ids[0, 1], np.array([258, 97, 98, 259, 260, 260]) + 1)
    np.testing.assert_array_equal(ids[0, 2], np.array([258, 257, 259, 260, 260, 260]) + 1)
    np.testing.assert_array_equal(ids[1, 1], np.array([258, 257, 259, 260, 260, 260]) + 1)
    assert not ids[1, 2].any()


@pytest.mark.parametrize("char", ["\u200e", "\u200f", "\u202a", "\u202b", "\u202c", "\u202d", "\u202e",
                                  "\u2066", "\u2067", "\u2068", "\u2069", "\u00ad", "\u200b", "\ufeff"])
def test_every_format_character_is_invisible(char):
    assert is_blank(char * 3) and is_blank(f" {char}\t")
    assert tokenize(f"a {char} b", "whitespace") == ["a", "b"] and tokenize(f"{char} {char}") == []
    assert not is_blank(f"{char}x")
