"""What counts as one reaction emoji (services/shared/emoji.py): one grapheme of the Unicode emoji set."""

import pytest

from services.shared.emoji import MAX_EMOJI_CODE_POINTS, is_emoji


@pytest.mark.parametrize("emoji", ["😀", "👍🏽", "❤️", "❤", "👨‍👩‍👧‍👦", "🧑🏾‍🚀", "🇫🇷", "1️⃣", "#⃣", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "©️"])
def test_each_kind_of_emoji_grapheme_is_one_emoji(emoji):
    assert is_emoji(emoji)


@pytest.mark.parametrize("text", ["", "a", "1", "#", "<script>", "😀😀", "👍 ", " 👍", "\u200d", "🇫", "\ufe0f",
                                  "👍\u200d", "é", "中", None, 3, ["👍"]])
def test_text_two_emoji_or_a_fragment_is_not_one_emoji(text):
    assert not is_emoji(text)


def test_a_long_run_of_joined_pictographs_is_refused_by_length():
    assert not is_emoji("\u200d".join(["😀"] * MAX_EMOJI_CODE_POINTS))
