"""The --rerank text: parsed by a small explicit grammar, with errors that name the problem."""
import pytest

from imret.config import ConfigError
from imret.rerank import DBA, STEPS, AlphaQE, AverageQE, GlobalFeatureRerank, KReciprocal, Pipeline, parse_steps


def test_registered_steps():
    # other packages register steps of their own (spatial verification): these are this package's
    assert {"aqe", "dba", "gfr", "kreciprocal", "qe"} <= set(STEPS.names())


def test_steps_and_their_parameters_in_order():
    assert parse_steps("aqe,dba") == (AlphaQE(), DBA())
    assert parse_steps("dba:k=5,aqe:n=3,alpha=3") == (DBA(k=5), AlphaQE(n=3, alpha=3.0))
    assert parse_steps(" DBA : k = 5 , qe ") == (DBA(k=5), AverageQE())
    assert parse_steps("gfr:k=2,weights=1/0.5,shortlist=50") == (
        GlobalFeatureRerank(k=2, weights=(1.0, 0.5), shortlist=50),)
    assert parse_steps("gfr:weights=none") == (GlobalFeatureRerank(),)
    assert parse_steps("kreciprocal:k1=10,k2=3,lam=0.5") == (KReciprocal(k1=10, k2=3, lam=0.5),)


def test_spec_round_trips():
    p = Pipeline.parse("dba:k=4,alpha=1,aqe:n=3,gfr:weights=1/0.5,kreciprocal:lam=0.2,qe:n=1")
    assert Pipeline.parse(str(p)) == p
    assert str(Pipeline.parse("aqe")) == "aqe:n=2,alpha=3,shortlist=100,scope=database"


def test_depth_is_the_largest_shortlist():
    assert Pipeline.parse("dba").depth == 100
    assert Pipeline.parse("aqe:shortlist=30,kreciprocal:shortlist=250").depth == 250


@pytest.mark.parametrize("spec, message", [
    ("", "empty re-ranking spec"),
    ("aqe,,dba", "empty item"),
    ("foo", "unknown re-ranking step 'foo'; known: aqe, dba, gfr, kreciprocal, qe"),
    ("aqe:m=3", "aqe: unknown parameter m; allowed: n, alpha, shortlist"),
    ("n=3", "a parameter must follow a step name"),
    ("aqe:n", "parameters are key=value"),
    ("aqe:n=", "parameters are key=value"),
    ("aqe:", "nothing after ':'"),
    (":n=2", "missing step name"),
    ("aqe:n=2,n=3", "parameter 'n' given twice"),
    ("aqe:n=0", "aqe: n must be an integer ≥ 1, got 0"),
    ("aqe:n=2.5", "aqe: n must be an integer, got '2.5'"),
    ("aqe:alpha=-1", "aqe: alpha must be a number ≥ 0.0"),
    ("aqe:alpha=nan", "aqe: alpha must be a number, got 'nan'"),
    ("aqe:alpha=__import__('os')", "aqe: alpha must be a number"),
    ("kreciprocal:lam=1.5", "kreciprocal: lam must be a number ≥ 0.0 and ≤ 1.0"),
    ("gfr:k=2,weights=1/2/3", "gfr: weights needs k=2 numbers, got 3"),
    ("gfr:k=1,weights=-1", "gfr: weights must be finite numbers ≥ 0"),
    ("gfr:k=1,weights=x", "gfr: weights must be numbers separated by '/'"),
    ("gfr:k=1,weights=0,self_weight=0", "all weights are zero"),
    ("gfr:shortlist=1", "gfr: shortlist must be an integer ≥ 2"),
    ("aqe,dba", "dba changes the database before the search, so it must come first"),
    ("dba,dba:k=3", "at most one database step"),
    ("dba:k=0", "dba: k must be an integer ≥ 1 and ≤ 1000"),
])
def test_bad_specs_are_refused_with_the_reason(spec, message):
    with pytest.raises(ConfigError) as err:
        Pipeline.parse(spec)
    assert message in str(err.value)


def test_steps_validate_when_built_in_python_too():
    with pytest.raises(ConfigError, match="n must be an integer"):
        AlphaQE(n=True)
    with pytest.raises(ConfigError, match="k1 must be an integer"):
        KReciprocal(k1=2.0)
    assert DBA.from_dict(DBA(k=3, alpha=1.0).to_dict()) == DBA(k=3, alpha=1.0)
