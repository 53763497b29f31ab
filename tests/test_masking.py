"""The streaming masker (src/juncture/masking.py): whatever the chunking of a hook's output, no secret and
no line of a secret of several lines gets through, only what may begin a secret is held back, and a
secret learned mid-stream applies to what is still held."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from juncture.state.masking import MARK, Masks, Stream

# A small alphabet makes overlapping and repeated secrets likely; no `*`, which the mark is made of.
ALPHABET = "ab\n x"
secret_text = st.text(alphabet=ALPHABET, min_size=1, max_size=12)
stream_text = st.text(alphabet=ALPHABET, max_size=200)


def reference(data: bytes, patterns: tuple[bytes, ...]) -> bytes:
    """Every byte of every occurrence hidden, each run of hidden bytes as one mark: by brute force."""
    hidden = [False] * len(data)
    for pattern in patterns:
        for i in range(len(data) - len(pattern) + 1):
            if data[i : i + len(pattern)] == pattern:
                hidden[i : i + len(pattern)] = [True] * len(pattern)
    out = bytearray()
    for i, byte in enumerate(data):
        if not hidden[i]:
            out.append(byte)
        elif i == 0 or not hidden[i - 1]:
            out += MARK
    return bytes(out)


def shown_lines(secret: str) -> list[bytes]:
    """What must never show: the secret, and each of its lines of 3 bytes or more that is not blank."""
    whole = secret.encode()
    lines = [line for line in whole.split(b"\n") if len(line) >= 3 and line.strip()]
    return ([whole] if len(whole) >= 3 else []) + lines


def feed_all(masks: Masks, chunks: list[bytes]) -> tuple[bytes, int]:
    """The stream's whole output, and the most it ever held back."""
    stream = masks.stream()
    out = []
    most = 0
    for chunk in chunks:
        out.append(stream.feed(chunk))
        most = max(most, len(stream.held))
        assert held_is_a_beginning(stream)
    out.append(stream.flush())
    return b"".join(out), most


def held_is_a_beginning(stream: Stream) -> bool:
    held = stream.held
    return not held or any(len(p) > len(held) and p.startswith(held) for p in stream.masks.patterns)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    bounds = sorted({min(p, len(data)) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, deadline=None)
@given(
    secrets=st.lists(secret_text, min_size=1, max_size=4),
    pieces=st.lists(st.one_of(stream_text, st.integers(0, 3)), max_size=12),
    points=st.lists(st.integers(0, 400), max_size=20),
)
def test_any_chunking_of_a_stream_with_secrets_reveals_no_secret_line(
    secrets: list[str], pieces: list[str | int], points: list[int]
) -> None:
    """The stream: text around secrets (an int picks a secret, printed whole). However it is cut, the
    output is the brute-force masking of the whole stream, and shows no secret nor line of one."""
    masks = Masks()
    masks.add(secrets)
    data = b"".join(secrets[p % len(secrets)].encode() if isinstance(p, int) else p.encode() for p in pieces)
    out, most = feed_all(masks, cut(data, points))
    assert out == reference(data, masks.patterns) == masks.mask(data)
    for secret in secrets:
        for line in shown_lines(secret):
            assert line not in out
    longest = max((len(p) for p in masks.patterns), default=1)
    assert most <= longest - 1


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.text(alphabet="abcxyz", min_size=3, max_size=10), min_size=2, max_size=5),
    between=st.lists(st.text(alphabet="ab \n", max_size=8), min_size=5, max_size=5),
    seed=st.integers(0, 2**32),
)
def test_lines_of_a_secret_printed_apart_with_text_between_are_each_hidden(
    lines: list[str], between: list[str], seed: int
) -> None:
    secret = "\n".join(lines)
    masks = Masks()
    masks.add([secret])
    data = "".join(f"{between[i % 5]}{line}\n" for i, line in enumerate(lines)).encode()
    rng = random.Random(seed)
    out, _ = feed_all(masks, cut(data, [rng.randrange(len(data) + 1) for _ in range(rng.randrange(8))]))
    for line in lines:
        assert line.encode() not in out


def test_a_secret_split_across_chunks_is_one_mark_and_the_text_around_it_shows() -> None:
    masks = Masks()
    masks.add(["hunter2-secret"])
    stream = masks.stream()
    assert stream.feed(b"pass: hunt") == b"pass: "  # "hunt" may begin the secret: held
    assert stream.held == b"hunt"
    assert stream.feed(b"er2-sec") == b""
    assert stream.feed(b"ret ok\n") == b"*** ok\n"
    assert stream.flush() == b""


def test_text_that_cannot_begin_a_secret_is_passed_on_at_once() -> None:
    masks = Masks()
    masks.add(["hunter2-secret"])
    stream = masks.stream()
    assert stream.feed(b"line one\nline two\n") == b"line one\nline two\n"
    assert stream.feed(b"hunter2-x") == b"hunter2-x"
    assert stream.held == b""


def test_a_beginning_left_at_the_end_of_the_output_is_shown() -> None:
    masks = Masks()
    masks.add(["hunter2-secret"])
    stream = masks.stream()
    assert stream.feed(b"x hunter2-se") == b"x "
    assert stream.flush() == b"hunter2-se"


def test_a_secret_learned_mid_stream_masks_what_is_still_held() -> None:
    masks = Masks()
    masks.add(["token-abcdef"])
    stream = masks.stream()
    assert stream.feed(b"got token-ab") == b"got "
    masks.add(["token-abXYZ"])  # e.g. read from the hook's outputs file meanwhile
    assert stream.feed(b"XYZ\n") == b"***\n"


def test_an_occurrence_reaching_into_held_bytes_stays_hidden_and_is_one_mark() -> None:
    """ "abcd" is complete, but "cd" could begin "cdxy": the cut falls inside the first occurrence."""
    masks = Masks()
    masks.add(["abcd", "cdxy"])
    stream = masks.stream()
    assert stream.feed(b"-abcd") == b"-***"
    assert stream.held == b"cd"
    assert stream.feed(b"x") == b""
    assert stream.feed(b"y!") == b"!"  # abcdxy: one run of hidden bytes
    assert stream.feed(b"-abcd") == b"-***"
    assert stream.feed(b"zz") == b"zz"  # the held "cd" was hidden already, and not twice


def test_a_long_run_of_overlapping_occurrences_keeps_the_held_part_bounded() -> None:
    masks = Masks()
    masks.add(["aaa"])
    stream = masks.stream()
    out = [stream.feed(b"a" * 1000) for _ in range(50)]
    assert len(stream.held) <= 2
    assert b"".join(out) + stream.flush() == b"***"


def test_short_secrets_and_short_or_blank_lines_are_not_patterns() -> None:
    masks = Masks()
    masks.add(["ab", "x\n  \nline-three\nyz"])
    assert set(masks.patterns) == {b"x\n  \nline-three\nyz", b"line-three"}
    assert not Masks()


def test_a_line_ending_in_cr_is_hidden_without_its_cr() -> None:
    masks = Masks()
    masks.add(["first-line\r\nsecond-line"])
    assert masks.mask(b"1 first-line\n2 second-line\r\n") == b"1 ***\n2 ***\r\n"


def test_a_secret_read_from_a_file_that_is_not_utf8_is_masked_as_its_bytes() -> None:
    masks = Masks()
    masks.add([b"\xff\xfe-key-bytes".decode("utf-8", "surrogateescape")])  # as outputs files are read
    assert masks.mask(b"got \xff\xfe-key-bytes\n") == b"got ***\n"
