"""Per-field accuracy beside exact match (runners.metric.field_accuracy): real JSON answers."""

from __future__ import annotations

from runners.metric import field_accuracy

REF = '{"category": "decor", "size": "bulk", "weekend": false}'


def test_each_field_scored_on_its_own():
    refs = [REF, '{"category": "garden", "size": "single", "weekend": true}']
    gen = [
        '{"category": "decor", "size": "small", "weekend": false}',  # 2 of 3 fields right
        '{"category": "garden", "size": "single", "weekend": true}',  # exact
    ]
    assert field_accuracy(gen, refs) == {"category": 1.0, "size": 0.5, "weekend": 1.0}


def test_broken_or_trailing_text_and_wrong_types():
    refs = [REF, REF, REF]
    gen = [
        '{"category": "decor", "size": "bulk", "weekend": false} and more text',  # parsed up to the object
        '{"category": "decor", "size": ',  # cut off: nothing scores
        '{"category": "decor", "size": "bulk", "weekend": "false"}',  # a string is not the boolean
    ]
    assert field_accuracy(gen, refs) == {
        "category": round(2 / 3, 4),
        "size": round(2 / 3, 4),
        "weekend": round(1 / 3, 4),
    }


def test_none_unless_every_reference_is_a_json_object():
    assert field_accuracy(["Paris"], ["Paris"]) is None
    assert field_accuracy([REF, "x"], [REF, "plain text"]) is None
    assert field_accuracy([], []) is None
