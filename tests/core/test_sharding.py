"""core.sharding: a key always lands in the same shard, and shard results that lose, double or invent rows are
refused with the ids named."""

import pytest

from mangadistill.core.sharding import ShardAccountingError, check_shard_accounting, shard_of, split_positions


def test_a_key_lands_in_the_same_shard_every_time_and_every_shard_gets_keys():
    keys = [f"p{i}" for i in range(300)]
    positions = split_positions(keys, 3)
    assert sorted(p for shard in positions for p in shard) == list(range(300))  # a partition
    assert all(shard == sorted(shard) for shard in positions)  # input order kept within a shard
    assert all(60 < len(shard) < 140 for shard in positions)  # roughly even
    assert [shard_of(key, 3) for key in keys] == [shard_of(key, 3) for key in keys]
    assert [shard_of(f"p{i}", 3) for i in range(6)] == [1, 0, 1, 1, 2, 1]  # sha256, not Python's salted hash
    assert split_positions(keys, 1) == [list(range(300))]
    with pytest.raises(ValueError, match="at least 1 shard"):
        shard_of("p1", 0)


def test_every_id_back_exactly_once_passes_in_any_order():
    check_shard_accounting(["a", "b", "c"], ["c", "a", "b"])


@pytest.mark.parametrize(("returned", "lost", "doubled", "unexpected", "message"), [
    (["a", "b"], ["c"], [], [], "1 prompt(s) lost (in no shard's output): 'c'"),
    (["a", "b", "c", "b"], [], ["b"], [], "1 prompt(s) doubled (more than once in the outputs): 'b'"),
    (["a", "b", "c", "z"], [], [], ["z"], "1 prompt(s) returned that no shard was given: 'z'"),
])
def test_lost_doubled_and_unknown_ids_are_named(returned, lost, doubled, unexpected, message):
    with pytest.raises(ShardAccountingError) as error:
        check_shard_accounting(["a", "b", "c"], returned, what="prompt")
    assert (error.value.lost, error.value.doubled, error.value.unexpected) == (lost, doubled, unexpected)
    assert str(error.value) == message


def test_a_long_list_of_lost_ids_is_cut_in_the_message_but_kept_whole_on_the_error():
    expected = [f"p{i:02d}" for i in range(30)]
    with pytest.raises(ShardAccountingError, match=r"30 prompt\(s\) lost .*'p19' and 10 more") as error:
        check_shard_accounting(expected, [], what="prompt")
    assert error.value.lost == expected
