import pytest

from pgm_plugins.bench.suite import SuiteError, load_suite, parse_suite

GOOD = {"dataset": "synthetic", "hosts": ["late_fusion"], "arms": ["host", "pgm"], "seeds": [0, 1]}


def test_quick_suite_loads():
    suite = load_suite("quick")
    assert suite.dataset == "synthetic" and "pgm" in suite.arms and len(suite.seeds) == 5


def test_good_suite_defaults():
    suite = parse_suite("t", GOOD)
    assert suite.protocol == "default" and suite.folds == 1 and suite.arms == ("host", "pgm")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"arms": ["pgmm"]}, "Did you mean 'pgm'"),
        ({"dataset": "synthetik"}, "Did you mean 'synthetic'"),
        ({"hosts": ["late_fusio"]}, "Did you mean 'late_fusion'"),
        ({"seeds": []}, "seeds must be"),
        ({"epochs": 0}, "epochs must be"),
        ({"seed": [1]}, "unknown key 'seed'"),
    ],
)
def test_bad_suite_errors(change, needle):
    with pytest.raises(SuiteError, match=needle):
        parse_suite("t", {**GOOD, **change})


def test_unknown_suite_name_lists_valid():
    with pytest.raises(SuiteError, match="Did you mean 'quick'"):
        load_suite("quik")
