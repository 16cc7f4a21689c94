//! Recursive-descent parser for the HogQL subset the mock evaluates.
//!
//! ```text
//! query   := SELECT [DISTINCT] item, … FROM (table | '(' query ')') [[AS] alias] [WHERE e] [GROUP BY e, …]
//!            [HAVING e] [ORDER BY e [ASC|DESC] [NULLS FIRST|LAST], …]
//!            [LIMIT e [, e | OFFSET e]] [OFFSET e] [;]
//! e       := or;  or := and (OR and)*;  and := not (AND not)*;  not := NOT not | cmp
//! cmp     := add [op add | [NOT] IN add | [NOT] LIKE|ILIKE add | IS [NOT] NULL
//!                 | [NOT] BETWEEN add AND add]
//! add     := mul ((+|-) mul)*;  mul := unary ((*|/|%) unary)*;  unary := - unary | postfix
//! postfix := primary ([e])*
//! primary := literal | {placeholder} | (e, …) | [e, …] | name(.name)* | name(args)
//!            | name(params)(args)           (a parametric aggregate: quantiles(0.25, 0.75)(x))
//!            | INTERVAL unary unit          (unit: SECOND … YEAR; read as toInterval<Unit>(…))
//! ```

use super::HogQlError;
use super::ast::{ArithOp, CmpOp, Expr, FromClause, Literal, OrderItem, SelectItem, SelectQuery};
use super::lexer::{Tok, Token, tokenize};
use super::value::IntervalUnit;

const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "ORDER",
    "LIMIT",
    "OFFSET",
    "HAVING",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ILIKE",
    "IS",
    "BY",
    "ASC",
    "DESC",
    "UNION",
    "JOIN",
    "ON",
    "WITH",
    "BETWEEN",
    "DISTINCT",
    "LEFT",
    "RIGHT",
    "INNER",
    "OUTER",
    "FULL",
    "CROSS",
    "ARRAY",
    "USING",
    "NULLS",
    "SETTINGS",
    "SAMPLE",
    "PREWHERE",
    "WINDOW",
    "QUALIFY",
    "ASOF",
    "ANY",
    "ALL",
    "INTERSECT",
    "EXCEPT",
];

/// How deeply expressions may nest. Binding and evaluation recurse over the tree, so the
/// limit keeps hostile input (`((((…))))`, `1+1+1+…`) from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// Parses one SELECT statement.
pub(crate) fn parse_query(src: &str) -> Result<SelectQuery, HogQlError> {
    let tokens = tokenize(src)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        depth: 0,
    };
    let query = p.query()?;
    p.eat_sym(";");
    if !matches!(p.peek(), Tok::Eof) {
        return Err(p.unexpected("end of query"));
    }
    Ok(query)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Current expression nesting, bounded by [`MAX_DEPTH`].
    depth: usize,
}

impl Parser {
    /// Enters one nesting level (undone by [`Parser::leave`]).
    fn enter(&mut self) -> Result<(), HogQlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_here(&format!(
                "expression is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        Ok(())
    }

    fn leave(&mut self, levels: usize) {
        self.depth -= levels;
    }

    fn peek(&self) -> &Tok {
        &self.tokens[self.pos.min(self.tokens.len() - 1)].tok
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].tok
    }

    fn advance(&mut self) -> Tok {
        let tok = self.peek().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        tok
    }

    fn error_here(&self, msg: &str) -> HogQlError {
        let t = &self.tokens[self.pos.min(self.tokens.len() - 1)];
        HogQlError::new(format!(
            "Syntax error at line {}, column {}: {msg}",
            t.line, t.col
        ))
    }

    fn unexpected(&self, expected: &str) -> HogQlError {
        self.error_here(&format!(
            "expected {expected}, found {}",
            self.peek().describe()
        ))
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), HogQlError> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn is_sym(&self, sym: &str) -> bool {
        matches!(self.peek(), Tok::Sym(s) if *s == sym)
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        if self.is_sym(sym) {
            self.advance();
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<(), HogQlError> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{sym}'")))
        }
    }

    fn is_reserved(&self) -> bool {
        matches!(self.peek(), Tok::Ident(s) if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)))
    }

    /// A name usable as an alias: a quoted identifier or a non-reserved bare one.
    fn alias_name(&mut self) -> Option<String> {
        match self.peek().clone() {
            Tok::Quoted(s) => {
                self.advance();
                Some(s)
            }
            Tok::Ident(s) if !self.is_reserved() => {
                self.advance();
                Some(s)
            }
            _ => None,
        }
    }

    fn query(&mut self) -> Result<SelectQuery, HogQlError> {
        if self.is_kw("WITH") {
            return Err(self.error_here("WITH is not supported by the mock"));
        }
        self.expect_kw("SELECT")?;
        let distinct = self.eat_kw("DISTINCT");
        let mut select = Vec::new();
        loop {
            if self.eat_sym("*") {
                select.push(SelectItem::Star);
            } else {
                let expr = self.expr()?;
                let alias = if self.eat_kw("AS") {
                    Some(
                        self.alias_name()
                            .ok_or_else(|| self.unexpected("an alias"))?,
                    )
                } else {
                    self.alias_name()
                };
                select.push(SelectItem::Expr { expr, alias });
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_kw("FROM")?;
        let from = if self.eat_sym("(") {
            if !self.is_kw("SELECT") {
                return Err(self.unexpected("SELECT after '(' in FROM"));
            }
            // A subquery nests like an expression, so it counts against the same depth limit.
            self.enter()?;
            let inner = self.query();
            self.leave(1);
            let inner = inner?;
            self.expect_sym(")")?;
            FromClause::Subquery(Box::new(inner))
        } else {
            match self.peek().clone() {
                Tok::Ident(s) | Tok::Quoted(s) => {
                    self.advance();
                    FromClause::Table(s)
                }
                _ => return Err(self.unexpected("a table name or a subquery")),
            }
        };
        let table_alias = if self.eat_kw("AS") {
            Some(
                self.alias_name()
                    .ok_or_else(|| self.unexpected("an alias"))?,
            )
        } else {
            self.alias_name()
        };
        for kw in [
            "JOIN", "LEFT", "RIGHT", "INNER", "FULL", "CROSS", "ARRAY", "ANY", "ASOF",
        ] {
            if self.is_kw(kw) {
                return Err(self.error_here("JOIN is not supported by the mock"));
            }
        }
        if self.is_sym(",") {
            return Err(self.error_here("JOIN is not supported by the mock"));
        }
        let where_ = if self.eat_kw("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.eat_kw("GROUP") {
            self.expect_kw("BY")?;
            group_by = self.expr_list()?;
        }
        let having = if self.eat_kw("HAVING") {
            Some(self.expr()?)
        } else {
            None
        };
        let mut order_by = Vec::new();
        if self.eat_kw("ORDER") {
            self.expect_kw("BY")?;
            loop {
                let expr = self.expr()?;
                let desc = if self.eat_kw("DESC") || self.eat_kw("DESCENDING") {
                    true
                } else {
                    let _ = self.eat_kw("ASC") || self.eat_kw("ASCENDING");
                    false
                };
                let nulls_first = if self.eat_kw("NULLS") {
                    if self.eat_kw("FIRST") {
                        Some(true)
                    } else {
                        self.expect_kw("LAST")?;
                        Some(false)
                    }
                } else {
                    None
                };
                order_by.push(OrderItem {
                    expr,
                    desc,
                    nulls_first,
                });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let mut limit = None;
        let mut offset = None;
        if self.eat_kw("LIMIT") {
            let first = self.expr()?;
            if self.eat_sym(",") {
                // ClickHouse `LIMIT offset, count`.
                offset = Some(first);
                limit = Some(self.expr()?);
            } else {
                limit = Some(first);
            }
            if self.is_kw("BY") {
                return Err(self.error_here("LIMIT BY is not supported by the mock"));
            }
            if self.is_kw("WITH") {
                return Err(self.error_here("LIMIT WITH TIES is not supported by the mock"));
            }
        }
        if self.eat_kw("OFFSET") {
            offset = Some(self.expr()?);
            let _ = self.eat_kw("ROWS") || self.eat_kw("ROW");
        }
        if self.is_kw("UNION") || self.is_kw("INTERSECT") || self.is_kw("EXCEPT") {
            return Err(self.error_here("UNION is not supported by the mock"));
        }
        if self.is_kw("SETTINGS") {
            return Err(self.error_here("SETTINGS is not supported by the mock"));
        }
        Ok(SelectQuery {
            distinct,
            select,
            from,
            table_alias,
            where_,
            group_by,
            having,
            order_by,
            limit,
            offset,
        })
    }

    fn expr_list(&mut self) -> Result<Vec<Expr>, HogQlError> {
        let mut out = vec![self.expr()?];
        while self.eat_sym(",") {
            out.push(self.expr()?);
        }
        Ok(out)
    }

    fn expr(&mut self) -> Result<Expr, HogQlError> {
        self.enter()?;
        let e = self.or();
        self.leave(1);
        e
    }

    fn or(&mut self) -> Result<Expr, HogQlError> {
        let mut items = vec![self.and()?];
        while self.eat_kw("OR") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn and(&mut self) -> Result<Expr, HogQlError> {
        let mut items = vec![self.not()?];
        while self.eat_kw("AND") {
            items.push(self.not()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn not(&mut self) -> Result<Expr, HogQlError> {
        if self.eat_kw("NOT") {
            self.enter()?;
            let inner = self.not();
            self.leave(1);
            return Ok(Expr::Not(Box::new(inner?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, HogQlError> {
        let left = self.add()?;
        let op = match self.peek() {
            Tok::Sym("=" | "==") => Some(CmpOp::Eq),
            Tok::Sym("!=" | "<>") => Some(CmpOp::NotEq),
            Tok::Sym("<") => Some(CmpOp::Lt),
            Tok::Sym("<=") => Some(CmpOp::LtEq),
            Tok::Sym(">") => Some(CmpOp::Gt),
            Tok::Sym(">=") => Some(CmpOp::GtEq),
            _ => None,
        };
        if let Some(op) = op {
            self.advance();
            let right = self.add()?;
            return Ok(Expr::Cmp(op, Box::new(left), Box::new(right)));
        }
        let negated = self.is_kw("NOT")
            && (self.is_kw_at(1, "IN")
                || self.is_kw_at(1, "LIKE")
                || self.is_kw_at(1, "ILIKE")
                || self.is_kw_at(1, "BETWEEN"));
        if negated {
            self.advance();
        }
        if self.eat_kw("IN") {
            if self.is_sym("(") && self.is_kw_at(1, "SELECT") {
                return Err(self.error_here(
                    "subqueries in expressions are not supported by the mock (only in FROM)",
                ));
            }
            let list = self.add()?;
            return Ok(Expr::In {
                expr: Box::new(left),
                list: Box::new(list),
                negated,
            });
        }
        let like = if self.eat_kw("LIKE") {
            Some(false)
        } else if self.eat_kw("ILIKE") {
            Some(true)
        } else {
            None
        };
        if let Some(case_insensitive) = like {
            let pattern = self.add()?;
            return Ok(Expr::Like {
                expr: Box::new(left),
                pattern: Box::new(pattern),
                negated,
                case_insensitive,
            });
        }
        if self.eat_kw("BETWEEN") {
            let low = self.add()?;
            self.expect_kw("AND")?;
            let high = self.add()?;
            let range = Expr::And(vec![
                Expr::Cmp(CmpOp::GtEq, Box::new(left.clone()), Box::new(low)),
                Expr::Cmp(CmpOp::LtEq, Box::new(left), Box::new(high)),
            ]);
            return Ok(if negated {
                Expr::Not(Box::new(range))
            } else {
                range
            });
        }
        if negated {
            return Err(self.unexpected("IN, LIKE, ILIKE or BETWEEN"));
        }
        if self.eat_kw("IS") {
            let negated = self.eat_kw("NOT");
            self.expect_kw("NULL")?;
            return Ok(Expr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        Ok(left)
    }

    fn add(&mut self) -> Result<Expr, HogQlError> {
        let mut left = self.mul()?;
        let mut levels = 0;
        let result = loop {
            let op = match self.peek() {
                Tok::Sym("+") => ArithOp::Add,
                Tok::Sym("-") => ArithOp::Sub,
                _ => break Ok(left),
            };
            self.advance();
            // Each operator nests the left-deep tree one level further.
            if let Err(e) = self.enter() {
                break Err(e);
            }
            levels += 1;
            match self.mul() {
                Ok(right) => left = Expr::Arith(op, Box::new(left), Box::new(right)),
                Err(e) => break Err(e),
            }
        };
        self.leave(levels);
        result
    }

    fn mul(&mut self) -> Result<Expr, HogQlError> {
        let mut left = self.unary()?;
        let mut levels = 0;
        let result = loop {
            let op = match self.peek() {
                Tok::Sym("*") => ArithOp::Mul,
                Tok::Sym("/") => ArithOp::Div,
                Tok::Sym("%") => ArithOp::Mod,
                _ => break Ok(left),
            };
            self.advance();
            if let Err(e) = self.enter() {
                break Err(e);
            }
            levels += 1;
            match self.unary() {
                Ok(right) => left = Expr::Arith(op, Box::new(left), Box::new(right)),
                Err(e) => break Err(e),
            }
        };
        self.leave(levels);
        result
    }

    fn unary(&mut self) -> Result<Expr, HogQlError> {
        if self.eat_sym("-") {
            self.enter()?;
            let inner = self.unary();
            self.leave(1);
            let inner = inner?;
            return Ok(match inner {
                Expr::Literal(Literal::Int(i)) => Expr::Literal(Literal::Int(-i)),
                Expr::Literal(Literal::Float(f)) => Expr::Literal(Literal::Float(-f)),
                other => Expr::Neg(Box::new(other)),
            });
        }
        if self.eat_sym("+") {
            self.enter()?;
            let inner = self.unary();
            self.leave(1);
            return inner;
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, HogQlError> {
        let mut e = self.primary()?;
        let mut levels = 0;
        let result = loop {
            if !self.eat_sym("[") {
                break Ok(e);
            }
            if let Err(err) = self.enter() {
                break Err(err);
            }
            levels += 1;
            let key = match self.expr() {
                Ok(k) => k,
                Err(err) => break Err(err),
            };
            if let Err(err) = self.expect_sym("]") {
                break Err(err);
            }
            e = Expr::Index(Box::new(e), Box::new(key));
        };
        self.leave(levels);
        result
    }

    fn primary(&mut self) -> Result<Expr, HogQlError> {
        match self.peek().clone() {
            Tok::Int(i) => {
                self.advance();
                Ok(Expr::Literal(Literal::Int(i)))
            }
            Tok::Float(f) => {
                self.advance();
                Ok(Expr::Literal(Literal::Float(f)))
            }
            Tok::Str(s) => {
                self.advance();
                Ok(Expr::Literal(Literal::Str(s)))
            }
            Tok::Placeholder(p) => {
                self.advance();
                Ok(Expr::Placeholder(p))
            }
            Tok::Sym("(") => {
                self.advance();
                if self.is_kw("SELECT") {
                    return Err(self.error_here(
                        "subqueries in expressions are not supported by the mock (only in FROM)",
                    ));
                }
                if self.eat_sym(")") {
                    return Ok(Expr::Tuple(Vec::new()));
                }
                let first = self.expr()?;
                if self.eat_sym(")") {
                    return Ok(first);
                }
                let mut items = vec![first];
                while self.eat_sym(",") {
                    if self.is_sym(")") {
                        break;
                    }
                    items.push(self.expr()?);
                }
                self.expect_sym(")")?;
                Ok(Expr::Tuple(items))
            }
            Tok::Sym("[") => {
                self.advance();
                let items = if self.is_sym("]") {
                    Vec::new()
                } else {
                    self.expr_list()?
                };
                self.expect_sym("]")?;
                Ok(Expr::Tuple(items))
            }
            Tok::Quoted(name) => {
                self.advance();
                self.field_chain(name)
            }
            Tok::Ident(name) => {
                if name.eq_ignore_ascii_case("NULL") {
                    self.advance();
                    return Ok(Expr::Literal(Literal::Null));
                }
                if name.eq_ignore_ascii_case("TRUE") {
                    self.advance();
                    return Ok(Expr::Literal(Literal::Bool(true)));
                }
                if name.eq_ignore_ascii_case("FALSE") {
                    self.advance();
                    return Ok(Expr::Literal(Literal::Bool(false)));
                }
                if name.eq_ignore_ascii_case("INTERVAL") {
                    self.advance();
                    return self.interval();
                }
                if ["CASE", "CAST"]
                    .iter()
                    .any(|k| name.eq_ignore_ascii_case(k))
                {
                    return Err(self.error_here(&format!(
                        "{} is not supported by the mock",
                        name.to_uppercase()
                    )));
                }
                // `any(x)` is an aggregate although ANY is a keyword (of joins).
                let any_call =
                    name.eq_ignore_ascii_case("ANY") && matches!(self.peek_at(1), Tok::Sym("("));
                if self.is_reserved() && !any_call {
                    return Err(self.unexpected("an expression"));
                }
                self.advance();
                if self.is_sym("(") {
                    return self.call(name);
                }
                self.field_chain(name)
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// `INTERVAL n UNIT` (after `INTERVAL`), read as `toInterval<Unit>(n)`.
    fn interval(&mut self) -> Result<Expr, HogQlError> {
        self.enter()?;
        let count = self.unary();
        self.leave(1);
        let count = count?;
        let unit = match self.peek() {
            Tok::Ident(u) => IntervalUnit::parse(u),
            _ => None,
        };
        let Some(unit) = unit else {
            return Err(self.unexpected(
                "an interval unit (SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR)",
            ));
        };
        self.advance();
        Ok(Expr::Call {
            name: format!("toInterval{}", unit.name()),
            params: None,
            args: vec![count],
            distinct: false,
        })
    }

    /// `name(args)`, or `name(params)(args)` (a parametric aggregate such as
    /// `quantiles(0.25, 0.75)(x)`), after the name.
    fn call(&mut self, name: String) -> Result<Expr, HogQlError> {
        let (distinct, first) = self.call_list()?;
        if !self.is_sym("(") {
            return Ok(Expr::Call {
                name,
                params: None,
                args: first,
                distinct,
            });
        }
        if distinct || first.iter().any(|a| matches!(a, Expr::Star)) {
            return Err(self.error_here(&format!(
                "DISTINCT and * belong in the argument list of {name}(…)(…), not in its parameters"
            )));
        }
        let (distinct, args) = self.call_list()?;
        if self.is_sym("(") {
            return Err(self.error_here(&format!(
                "{name}(…)(…) is followed by a third parenthesised list: a function has at most \
                 one parameter list and one argument list"
            )));
        }
        Ok(Expr::Call {
            name,
            params: Some(first),
            args,
            distinct,
        })
    }

    /// One parenthesised list of a call: `([DISTINCT] e | *, …)`.
    fn call_list(&mut self) -> Result<(bool, Vec<Expr>), HogQlError> {
        self.expect_sym("(")?;
        let distinct = self.eat_kw("DISTINCT");
        let mut args = Vec::new();
        if !self.is_sym(")") {
            loop {
                if self.eat_sym("*") {
                    args.push(Expr::Star);
                } else {
                    args.push(self.expr()?);
                }
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.expect_sym(")")?;
        Ok((distinct, args))
    }

    fn field_chain(&mut self, first: String) -> Result<Expr, HogQlError> {
        let mut chain = vec![first];
        while self.is_sym(".") {
            self.advance();
            let name = match self.peek() {
                Tok::Ident(s) | Tok::Quoted(s) => s.clone(),
                Tok::Int(i) => i.to_string(),
                _ => return Err(self.unexpected("a field name after '.'")),
            };
            self.advance();
            chain.push(name);
        }
        Ok(Expr::Field(chain))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_extractor_query() {
        let q = parse_query(
            "select uuid, event, timestamp from events where (timestamp, uuid) > ({ts}, toUUID({u})) \
             and event in ('a', 'b') order by timestamp asc, uuid asc limit 1000;",
        )
        .unwrap();
        assert_eq!(q.from, FromClause::Table("events".into()));
        assert_eq!(q.order_by.len(), 2);
        assert_eq!(q.limit, Some(Expr::Literal(Literal::Int(1000))));
        assert!(matches!(q.where_, Some(Expr::And(ref v)) if v.len() == 2));
    }

    #[test]
    fn limit_comma_is_an_offset() {
        let q = parse_query("SELECT 1 FROM events LIMIT 5, 10").unwrap();
        assert_eq!(q.offset, Some(Expr::Literal(Literal::Int(5))));
        assert_eq!(q.limit, Some(Expr::Literal(Literal::Int(10))));
    }

    #[test]
    fn aliases_and_quoted_names() {
        let q =
            parse_query("SELECT e.timestamp ts, properties.`key with spaces` AS k FROM events e")
                .unwrap();
        assert_eq!(q.table_alias.as_deref(), Some("e"));
        let SelectItem::Expr { alias, expr } = &q.select[1] else {
            panic!()
        };
        assert_eq!(alias.as_deref(), Some("k"));
        assert_eq!(
            expr,
            &Expr::Field(vec!["properties".into(), "key with spaces".into()])
        );
    }

    #[test]
    fn rejects_garbage_with_a_position() {
        let err = parse_query("SELECT FROM events").unwrap_err();
        assert!(
            err.message.starts_with("Syntax error at line 1, column 8"),
            "{}",
            err.message
        );
        assert!(parse_query("SELECT 1 FROM events WHERE").is_err());
        assert!(parse_query("SELECT 1 FROM events x y").is_err());
        assert!(parse_query("SELECT * FROM (SELECT 1)").is_err());
        assert!(parse_query("SELECT * FROM (events)").is_err());
        assert!(parse_query("SELECT * FROM (SELECT 1 FROM events").is_err());
        assert!(parse_query("SELECT 1 FROM events WHERE x IN (SELECT 1 FROM events)").is_err());
        assert!(parse_query("SELECT INTERVAL 1 FORTNIGHT FROM events").is_err());
        assert!(parse_query("SELECT INTERVAL '1 day' FROM events").is_err());
        assert!(parse_query("SELECT 1 FROM").is_err());
        assert!(parse_query("SELECT properties. FROM events").is_err());
    }

    #[test]
    fn subqueries_in_from_nest_and_print_back() {
        let q = parse_query(
            "SELECT c, count() FROM (SELECT d, count() AS c FROM (SELECT distinct_id AS d FROM events) AS x GROUP BY d) s WHERE c > 1 GROUP BY c LIMIT 5",
        )
        .unwrap();
        assert_eq!(q.table_alias.as_deref(), Some("s"));
        let FromClause::Subquery(inner) = &q.from else {
            panic!("{q:?}")
        };
        assert_eq!(inner.table_alias.as_deref(), Some("x"));
        assert!(matches!(inner.from, FromClause::Subquery(_)));
        assert_eq!(parse_query(&q.to_string()).unwrap(), q);
        // Without an alias, WHERE is not taken for one.
        let q = parse_query("SELECT 1 FROM (SELECT 1 FROM events) WHERE 1").unwrap();
        assert!(q.table_alias.is_none() && q.where_.is_some());
    }

    #[test]
    fn interval_syntax_reads_as_to_interval_calls() {
        let q =
            parse_query("SELECT now() - INTERVAL {n} DAY, INTERVAL -2 month FROM events").unwrap();
        let SelectItem::Expr { expr, .. } = &q.select[0] else {
            panic!()
        };
        assert_eq!(expr.to_string(), "(now() - toIntervalDay({n}))");
        let SelectItem::Expr { expr, .. } = &q.select[1] else {
            panic!()
        };
        assert_eq!(expr.to_string(), "toIntervalMonth(-2)");
        assert!(parse_query("SELECT any(event) FROM events").is_ok());
    }

    #[test]
    fn parametric_calls_read_parameters_then_arguments_and_print_back() {
        let q = parse_query(
            "SELECT count(), quantiles(0.25, 0.5, {l})(timestamp) FROM events WHERE event IN ({e})",
        )
        .unwrap();
        let SelectItem::Expr { expr, .. } = &q.select[1] else {
            panic!()
        };
        assert_eq!(
            expr,
            &Expr::Call {
                name: "quantiles".into(),
                params: Some(vec![
                    Expr::Literal(Literal::Float(0.25)),
                    Expr::Literal(Literal::Float(0.5)),
                    Expr::Placeholder("l".into()),
                ]),
                args: vec![Expr::Field(vec!["timestamp".into()])],
                distinct: false,
            }
        );
        assert_eq!(expr.to_string(), "quantiles(0.25, 0.5, {l})(timestamp)");
        let SelectItem::Expr { expr, .. } = &q.select[0] else {
            panic!()
        };
        assert!(matches!(expr, Expr::Call { params: None, .. }));
        assert_eq!(parse_query(&q.to_string()).unwrap(), q);
        for bad in [
            "SELECT quantile(0.5)(x)(y) FROM events",
            "SELECT quantile(DISTINCT 0.5)(x) FROM events",
            "SELECT quantile(*)(x) FROM events",
            "SELECT quantile(0.5)(x FROM events",
        ] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deeply_nested_subqueries_are_an_error() {
        let deep = format!(
            "SELECT 1 FROM {}events{}",
            "(SELECT 1 FROM ".repeat(200),
            ")".repeat(200)
        );
        assert!(parse_query(&deep).unwrap_err().message.contains("nested"));
    }

    #[test]
    fn hostile_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!(
            "SELECT {}1{} FROM events",
            "(".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(parse_query(&deep).unwrap_err().message.contains("nested"));
        let long = format!("SELECT 1{} FROM events", "+1".repeat(10_000));
        assert!(parse_query(&long).is_err());
        let nots = format!("SELECT 1 FROM events WHERE {}1", "NOT ".repeat(10_000));
        assert!(parse_query(&nots).is_err());
        let negs = format!("SELECT {}1 FROM events", "- ".repeat(10_000));
        assert!(parse_query(&negs).is_err());
        let fine = format!("SELECT 1{} FROM events", "+1".repeat(40));
        assert!(parse_query(&fine).is_ok());
    }
}
