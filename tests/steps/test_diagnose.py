"""What a capture claims about a dim, worked out size by size and said in words (never as a guard expression)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from buildsys.steps.diagnose import claimed_narrowings, sizes_in_words


@pytest.mark.parametrize(("holds", "lo", "hi", "words"), [
    (range(9, 17), 4, 16, "9..16"),
    (range(32, 97, 8), 32, 96, "only sizes 8·n from 32 to 96"),
    (range(33, 97, 8), 32, 96, "only sizes 8·n + 1 from 33 to 89"),
    ([40], 5, 120, "only the size 40"),
    ([], 5, 9, "no size of the range"),
    ([5, 6, 9, 11], 5, 12, "only the sizes 5, 6, 9, 11 (4 of the 8 checked)"),
])
def test_the_sizes_that_hold_are_said_in_words(holds, lo, hi, words):
    assert sizes_in_words(list(holds), hi - lo + 1, lo, hi) == words


def test_a_claim_is_evaluated_at_every_size_with_the_other_dims_at_their_traced_sizes():
    import sympy

    h, w = sympy.symbols("s0 s1", integer=True, positive=True)
    symbols = {h: "height", w: "width"}
    declared = {"height": {"min": 16, "max": 64}, "width": {"min": 16, "max": 64}}
    # a claim over both dims (as a reshape of the whole image into windows makes)
    claims = [(sympy.Eq(sympy.Mod(h * w, 16 * 4), 0), "m.py:3 in forward")]
    env = SimpleNamespace(var_to_val={h: 32, w: 32})
    found = claimed_narrowings(env, claims, symbols, declared)
    assert set(found) == {"height", "width"}
    height = found["height"]
    assert sizes_in_words(height.holds, height.checked, 16, 64) == "only sizes 2·n from 16 to 64"
    assert height.site == "m.py:3 in forward" and height.failing(16, 64)[:2] == [17, 19]


def test_a_claim_that_holds_at_every_size_narrows_nothing():
    import sympy

    size = sympy.Symbol("s0", integer=True, positive=True)
    # SqueezeNet's ceil-mode pooling: the last window starts inside the input, at every size
    last_window = 2 * ((((size - 3) // 2) - 1) // 2) < ((size - 3) // 2) + 1
    found = claimed_narrowings(SimpleNamespace(var_to_val={size: 64}), [(last_window, None)],
                               {size: "size"}, {"size": {"min": 32, "max": 96}})
    assert found == {}
