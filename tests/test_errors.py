import inspect

from shipyard import errors


def test_all_lists_every_error_and_every_error_is_in_the_drawn_tree() -> None:
    classes = {n for n, o in vars(errors).items() if inspect.isclass(o) and issubclass(o, errors.ShipyardError)}
    assert set(errors.__all__) == classes
    assert errors.__doc__ is not None
    for name in classes:
        assert name in errors.__doc__
