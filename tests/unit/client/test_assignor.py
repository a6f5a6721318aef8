from headwater.client.assignor import (
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    range_assign,
)


def test_payloads_round_trip() -> None:
    assert decode_subscription(encode_subscription(["a", "b"])) == ["a", "b"]
    assert decode_assignment(encode_assignment({"a": [0, 2], "b": [1]})) == {"a": [0, 2], "b": [1]}
    assert decode_assignment(b"") == {}


def test_subscription_v0_bytes() -> None:
    assert encode_subscription(["t"]) == b"\x00\x00\x00\x00\x00\x01\x00\x01t\xff\xff\xff\xff"


def test_range_assignor_gives_contiguous_ranges_extra_to_first_members() -> None:
    plan = range_assign({"m2": ["t"], "m1": ["t"], "m3": ["t", "u"]}, {"t": 7, "u": 2})
    assert plan == {"m1": {"t": [0, 1, 2]}, "m2": {"t": [3, 4]}, "m3": {"t": [5, 6], "u": [0, 1]}}
    assert range_assign({"a": ["t"], "b": ["t"]}, {"t": 1}) == {"a": {"t": [0]}, "b": {}}
