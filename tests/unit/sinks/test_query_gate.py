"""The read-only query check on recorded ``EXPLAIN AST`` trees (chdb 4.4 / ClickHouse 26.9).

The integration tests run the same checks through the engine; these pin each rule on the
exact tree text, so a change of the dump format shows up here first.
"""

from __future__ import annotations

import pytest

from leadflow.sinks.query_gate import GateError, Scope, check, parse_tree

FUNCTIONS = frozenset({"numbers", "merge", "file", "url", "view", "remote"})
FORMATS = frozenset({"JSON", "CSV", "TabSeparated", "Native"})
ALL = Scope("default", None, "default")
ANALYST = Scope(
    "analyst_a", frozenset({"leadflow", "leadflow_ws_a"}), "leadflow",
    frozenset({"leadflow", "leadflow_ws_a", "leadflow_ws_b", "system", "default"}),
)  # fmt: skip

SELECT_T = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Function count (children 1)
     ExpressionList
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      TableIdentifier {table}"""

OUTFILE = """SelectWithUnionQuery (children 4)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal UInt64_1
 Literal 'x.gz'
 Literal 'gzip'
 Identifier CSV"""

IN_TABLE = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Literal UInt64_1
   Function in (children 1)
    ExpressionList (children 2)
     Literal UInt64_1
     Identifier {table}"""

TABLE_FUNCTION = """SelectWithUnionQuery (children 1)
 ExpressionList (children 1)
  SelectQuery (children 2)
   ExpressionList (children 1)
    Asterisk
   TablesInSelectQuery (children 1)
    TablesInSelectQueryElement (children 1)
     TableExpression (children 1)
      Function {name} (children 1)
       ExpressionList (children 1)
        Literal 'x'"""

WITH_SETTINGS_AND_FORMAT = """SelectWithUnionQuery (children 3)
 ExpressionList (children 1)
  SelectQuery (children 1)
   ExpressionList (children 1)
    Literal 'x\\n y (children 2)' (alias a (children 3))
 Set
 Identifier JSON"""


def _code(dump: str, scope: Scope = ALL) -> int:
    with pytest.raises(GateError) as refused:
        check(parse_tree(dump), scope, FUNCTIONS, FORMATS)
    return refused.value.code


def test_reads_pass_and_say_their_format_and_settings() -> None:
    verdict = check(parse_tree(WITH_SETTINGS_AND_FORMAT), ALL, FUNCTIONS, FORMATS)
    assert verdict.output_format == "JSON"
    assert verdict.has_settings
    plain = check(parse_tree(SELECT_T.format(table="leadflow.events")), ANALYST, FUNCTIONS,
                  FORMATS)  # fmt: skip
    assert plain.output_format is None
    assert not plain.has_settings


@pytest.mark.parametrize(
    "dump",
    [
        "InsertQuery   (children 2)\n Identifier db\n Identifier t",
        "KillQueryQuery Literal_UInt64_1 ASYNC (children 1)\n Literal UInt64_1",
        "Set",
        "CreateQuery db t (children 1)",
        "Explain EXPLAIN (children 1)\n InsertQuery   (children 1)\n  Identifier t",
    ],
)
def test_anything_but_a_read_is_readonly(dump: str) -> None:
    assert _code(dump) == 164


def test_outfile_and_outside_functions_are_refused_for_everyone() -> None:
    assert _code(OUTFILE) == 358
    for name in ("merge", "file", "url", "remote"):
        assert _code(TABLE_FUNCTION.format(name=name)) == 497
    scalar = SELECT_T.replace("Function count", "Function file")
    assert _code(scalar.format(table="t")) == 497
    fine = TABLE_FUNCTION.format(name="numbers")
    assert check(parse_tree(fine), ALL, FUNCTIONS, FORMATS).output_format is None


def test_an_analyst_reads_only_its_databases_and_harmless_system_tables() -> None:
    for table in ("leadflow_ws_b.events", "default.t", "system.processes", "system.parts"):
        assert _code(SELECT_T.format(table=table), ANALYST) == 497
    assert _code(IN_TABLE.format(table="leadflow_ws_b.events"), ANALYST) == 497
    for table in ("leadflow.events", "leadflow_ws_a.v_events", "system.tables", "events"):
        check(parse_tree(SELECT_T.format(table=table)), ANALYST, FUNCTIONS, FORMATS)
    # "a.b" where a is no database is a column of alias a.
    check(parse_tree(IN_TABLE.format(table="x.col")), ANALYST, FUNCTIONS, FORMATS)
    assert _code("ShowProcesslistQuery", ANALYST) == 497
    assert _code("ShowTables (children 1)\n Identifier leadflow_ws_b", ANALYST) == 497
    assert _code("UseQuery leadflow_ws_b (children 1)\n Identifier leadflow_ws_b", ANALYST) == 497
