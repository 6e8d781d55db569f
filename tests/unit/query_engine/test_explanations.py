"""top_contributions: the `because` of an explained item, from explain_scores' terms."""

import numpy as np
import pytest

from query_engine.explanations import top_contributions


def test_the_largest_terms_in_order_with_their_share_of_the_score():
    terms = np.array([[0.1, 0.5, -0.2, 0.3], [0.0, 0.0, 0.0, 0.0]])
    top = top_contributions(terms, np.array([7, 3, 9, 4]), 3)
    assert top.rows == [[3, 4, 7], [7, 3, 9]]  # a zero score: ties keep the history's order
    assert top.parts[0] == pytest.approx([0.5, 0.3, 0.1])
    assert top.shares[0] == pytest.approx([0.5 / 0.7, 0.3 / 0.7, 0.1 / 0.7])
    assert top.shares[1] == [0.0, 0.0, 0.0]


def test_a_repeated_history_row_is_one_item_with_its_terms_added_up():
    terms = np.array([[0.2, 0.1, 0.25, 0.05]])
    top = top_contributions(terms, np.array([5, 8, 5, 2]), 3)
    assert top.rows == [[5, 8, 2]]
    assert top.parts[0] == pytest.approx([0.45, 0.1, 0.05])
    assert sum(top.shares[0]) == pytest.approx(1.0)
