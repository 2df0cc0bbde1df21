import pytest

from geventchat.core.ratelimit import TokenBucket


def test_burst_is_free_then_lines_are_spaced_by_the_rate():
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.0) == pytest.approx(0.2)


def test_tokens_come_back_with_time_up_to_the_burst():
    bucket = TokenBucket(rate=2, burst=2)
    bucket.take(0.0), bucket.take(0.0)
    assert bucket.take(100.0) == 0.0  # refilled, but only to the burst
    assert bucket.take(100.0) == 0.0
    assert bucket.take(100.0) == pytest.approx(0.5)


def test_bad_arguments_are_a_bug():
    with pytest.raises(ValueError):
        TokenBucket(0, 1)
