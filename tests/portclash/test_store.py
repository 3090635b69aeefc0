from conftest import store


def test_incr_starts_from_zero(kv):
    assert store("INCR hits") == "1"
    assert store("INCR hits") == "2"


def test_a_missing_key_is_nil(kv):
    assert store("GET nothing") == "nil"


def test_set_then_get(kv):
    assert store("SET colour blue") == "OK"
    assert store("GET colour") == "blue"


def test_keys_are_independent(kv):
    store("INCR a")
    store("INCR a")
    store("INCR b")
    assert (store("GET a"), store("GET b")) == ("2", "1")
