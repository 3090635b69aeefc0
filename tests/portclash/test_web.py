import urllib.error
import urllib.request

import pytest

from conftest import store


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.read().decode()


def test_first_visit_counts_one(web):
    assert get(f"{web}/visit/home") == "1"


def test_visits_add_up(web):
    for n in range(1, 4):
        assert get(f"{web}/visit/home") == str(n)


def test_pages_count_separately(web):
    get(f"{web}/visit/home")
    get(f"{web}/visit/home")
    assert get(f"{web}/visit/about") == "1"


def test_visits_are_kept_in_the_store(web):
    get(f"{web}/visit/cart")
    get(f"{web}/visit/cart")
    assert store("GET cart") == "2"


def test_an_unknown_page_is_404(web):
    with pytest.raises(urllib.error.HTTPError) as error:
        get(f"{web}/nowhere")
    assert error.value.code == 404
