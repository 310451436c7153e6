"""Dot-stuffing of the DATA payload: the end-of-data line never appears before the end."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bench.sink import unstuff
from dispatcher.smtp.pipelining import stuff

# Lines made of the characters that matter ("." and CR LF boundaries) plus a little text.
lines = st.lists(
    st.sampled_from([b"", b".", b"..", b".x", b"x.", b"x", b". .", b"\t."]), max_size=12
)


@given(lines)
def test_stuffed_crlf_body_ends_only_at_its_dot_and_unstuffs_to_itself(parts: list[bytes]) -> None:
    body = b"".join(p + b"\r\n" for p in parts)
    payload = stuff(body)
    assert payload.endswith(b".\r\n")
    content = payload[:-3]
    # The terminator is CRLF.CRLF, or a lone ".\r\n" at the very start of the data.
    assert b"\r\n.\r\n" not in b"\r\n" + content
    assert unstuff(content) == (body or b"\r\n")  # an empty body is sent as one empty line


@given(st.binary(max_size=200))
def test_any_bytes_never_contain_the_terminator_before_the_end(body: bytes) -> None:
    content = stuff(body)[:-3]
    assert content.endswith(b"\r\n")
    assert b"\n.\r\n" not in b"\n" + content  # not even after a bare LF
    assert b"\n.\n" not in b"\n" + content


def test_stuffing_examples() -> None:
    assert stuff(b"") == b"\r\n.\r\n"
    assert stuff(b".\r\n") == b"..\r\n.\r\n"
    assert stuff(b"a\r\n.b\r\n") == b"a\r\n..b\r\n.\r\n"
    assert stuff(b"a") == b"a\r\n.\r\n"
