"""HuJSON parser: comments, trailing commas, JSON escapes, located errors."""

from __future__ import annotations

import pytest

from outpost_server.errors import InvalidInput
from outpost_server.policy.errors import PolicyError
from outpost_server.policy.hujson import loads


def test_line_and_block_comments_are_ignored() -> None:
    text = """
    // leading comment
    {
      /* block
         comment */ "a": 1, // trailing
      "b": [true, /* inline */ false, null],
    }
    """
    assert loads(text) == {"a": 1, "b": [True, False, None]}


def test_trailing_commas_in_objects_and_arrays_are_accepted() -> None:
    assert loads('{"x": [1, 2, 3,], "y": {"z": "w",},}') == {"x": [1, 2, 3], "y": {"z": "w"}}


def test_comment_markers_inside_strings_are_text() -> None:
    assert loads('{"url": "https://example.com/*x*/"}') == {"url": "https://example.com/*x*/"}


def test_numbers_and_escapes_follow_json() -> None:
    assert loads('[0, -12, 1.5, 2e3, "\\u00e9\\n\\"", "\\ud83d\\ude00"]') == [
        0,
        -12,
        1.5,
        2000.0,
        'é\n"',
        "😀",
    ]


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ('{\n  "a": [1,,]\n}', 2, 11),
        ('{"a" 1}', 1, 6),
        ('{\n"a": 1\n"b": 2}', 3, 1),
        ("[1, 2", 1, 6),
        ('{"a": tru}', 1, 7),
        ("/* never closed", 1, 1),
    ],
)
def test_syntax_errors_carry_line_and_column(text: str, line: int, column: int) -> None:
    with pytest.raises(PolicyError) as info:
        loads(text)
    assert (info.value.line, info.value.column) == (line, column)
    assert f"line {line}, column {column}" in str(info.value)


def test_unterminated_string_points_at_its_opening_quote() -> None:
    with pytest.raises(PolicyError) as info:
        loads('{\n  "abc')
    assert (info.value.line, info.value.column) == (2, 3)


def test_trailing_garbage_after_the_document_is_rejected() -> None:
    with pytest.raises(PolicyError, match="after top-level value"):
        loads("{} {}")


def test_policy_error_is_an_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        loads("[")
