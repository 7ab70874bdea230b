"""dashboard.rest.Bodies: an encoded answer is reused only while what it encodes is unchanged."""

from dashboard.rest import Bodies


def counting(body: bytes):
    calls = []

    def encode() -> bytes:
        calls.append(1)
        return body

    return encode, calls


def test_same_key_and_source_encode_once():
    bodies, status = Bodies(), {"active": True}
    encode, calls = counting(b'{"active": true}')
    assert [bodies.get("status", status, encode) for _ in range(20)] == [b'{"active": true}'] * 20
    assert len(calls) == 1


def test_a_new_source_object_is_encoded_again_even_when_equal():
    # The read model publishes a new status object on every refresh: identity, not equality,
    # says whether it changed (an equal dict from a later refresh is still re-encoded).
    bodies = Bodies()
    encode, calls = counting(b"{}")
    bodies.get("status", {"a": 1}, encode)
    bodies.get("status", {"a": 1}, encode)
    assert len(calls) == 2


def test_a_new_store_version_is_a_new_key():
    bodies = Bodies()
    first, _ = counting(b"[1]")
    second, calls = counting(b"[1, 2]")
    assert bodies.get(("predictions", 7, (("limit", 50),)), None, first) == b"[1]"
    assert bodies.get(("predictions", 8, (("limit", 50),)), None, second) == b"[1, 2]"
    assert bodies.get(("predictions", 8, (("limit", 50),)), None, second) == b"[1, 2]"
    assert len(calls) == 1


def test_at_most_max_answers_are_kept():
    bodies = Bodies()
    for i in range(Bodies.MAX + 5):
        bodies.get(i, None, lambda i=i: str(i).encode())
    assert len(bodies._bodies) <= Bodies.MAX
