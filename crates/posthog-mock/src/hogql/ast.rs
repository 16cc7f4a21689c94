//! The parsed (unbound) HogQL syntax tree and its printer.

use std::fmt::{self, Display, Formatter};

/// A literal constant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "!=",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }

    /// ClickHouse's function name for the operator (used in type-mismatch messages).
    pub(crate) fn function_name(self) -> &'static str {
        match self {
            CmpOp::Eq => "equals",
            CmpOp::NotEq => "notEquals",
            CmpOp::Lt => "less",
            CmpOp::LtEq => "lessOrEquals",
            CmpOp::Gt => "greater",
            CmpOp::GtEq => "greaterOrEquals",
        }
    }

    /// The operator with its operands swapped (`a < b` ⇔ `b > a`).
    pub(crate) fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl ArithOp {
    pub(crate) fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
        }
    }
}

/// An expression as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Literal(Literal),
    Placeholder(String),
    /// A (possibly qualified) name: `timestamp`, `e.timestamp`, `properties.$browser`.
    Field(Vec<String>),
    /// `base['key']`
    Index(Box<Expr>, Box<Expr>),
    Tuple(Vec<Expr>),
    /// `*` as a function argument (`count(*)`).
    Star,
    Call {
        name: String,
        /// The parameter list of a parametric aggregate, `quantiles(0.25, 0.75)(x)`: `None`
        /// for an ordinary call.
        params: Option<Vec<Expr>>,
        args: Vec<Expr>,
        distinct: bool,
    },
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    In {
        expr: Box<Expr>,
        list: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Neg(Box<Expr>),
}

/// One item of the SELECT list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SelectItem {
    /// `*`
    Star,
    /// `expr [AS alias]`
    Expr { expr: Expr, alias: Option<String> },
}

/// One ORDER BY term.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderItem {
    pub expr: Expr,
    pub desc: bool,
    /// `NULLS FIRST` (`Some(true)`) / `NULLS LAST`; default last.
    pub nulls_first: Option<bool>,
}

/// What a SELECT reads from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FromClause {
    /// A table by name: `events`, `persons`, `sessions`.
    Table(String),
    /// `(SELECT …)`: the inner query's result rows.
    Subquery(Box<SelectQuery>),
}

/// A parsed SELECT.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SelectQuery {
    pub distinct: bool,
    pub select: Vec<SelectItem>,
    pub from: FromClause,
    pub table_alias: Option<String>,
    pub where_: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub order_by: Vec<OrderItem>,
    pub limit: Option<Expr>,
    pub offset: Option<Expr>,
}

fn write_list(f: &mut Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Writes a string literal with HogQL escaping.
pub(crate) fn quote_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Writes an identifier, quoting it with backticks unless it is a plain one.
pub(crate) fn quote_ident(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '$')
        && s.chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    if plain {
        s.to_owned()
    } else {
        format!("`{}`", s.replace('\\', "\\\\").replace('`', "\\`"))
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Null => f.write_str("NULL"),
            Literal::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Str(s) => f.write_str(&quote_str(s)),
        }
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Placeholder(p) => write!(f, "{{{p}}}"),
            Expr::Field(chain) => {
                let parts: Vec<String> = chain.iter().map(|p| quote_ident(p)).collect();
                f.write_str(&parts.join("."))
            }
            Expr::Index(base, key) => write!(f, "{base}[{key}]"),
            Expr::Tuple(items) => {
                f.write_str("(")?;
                write_list(f, items)?;
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Expr::Star => f.write_str("*"),
            Expr::Call {
                name,
                params,
                args,
                distinct,
            } => {
                f.write_str(name)?;
                if let Some(params) = params {
                    f.write_str("(")?;
                    write_list(f, params)?;
                    f.write_str(")")?;
                }
                f.write_str("(")?;
                if *distinct {
                    f.write_str("DISTINCT ")?;
                }
                write_list(f, args)?;
                f.write_str(")")
            }
            Expr::Not(e) => write!(f, "NOT {e}"),
            Expr::And(items) | Expr::Or(items) => {
                let op = if matches!(self, Expr::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                f.write_str("(")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(op)?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str(")")
            }
            Expr::Cmp(op, l, r) => write!(f, "{l} {} {r}", op.symbol()),
            Expr::In {
                expr,
                list,
                negated,
            } => {
                write!(f, "{expr} {}IN {list}", if *negated { "NOT " } else { "" })
            }
            Expr::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => write!(
                f,
                "{expr} {}{} {pattern}",
                if *negated { "NOT " } else { "" },
                if *case_insensitive { "ILIKE" } else { "LIKE" }
            ),
            Expr::IsNull { expr, negated } => {
                write!(f, "{expr} IS {}NULL", if *negated { "NOT " } else { "" })
            }
            Expr::Arith(op, l, r) => write!(f, "({l} {} {r})", op.symbol()),
            Expr::Neg(e) => write!(f, "-{e}"),
        }
    }
}

impl Display for SelectQuery {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if self.distinct {
            f.write_str("DISTINCT ")?;
        }
        for (i, item) in self.select.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match item {
                SelectItem::Star => f.write_str("*")?,
                SelectItem::Expr { expr, alias } => {
                    write!(f, "{expr}")?;
                    if let Some(a) = alias {
                        write!(f, " AS {}", quote_ident(a))?;
                    }
                }
            }
        }
        match &self.from {
            FromClause::Table(t) => write!(f, " FROM {}", quote_ident(t))?,
            FromClause::Subquery(q) => write!(f, " FROM ({q})")?,
        }
        if let Some(a) = &self.table_alias {
            write!(f, " AS {}", quote_ident(a))?;
        }
        if let Some(w) = &self.where_ {
            write!(f, " WHERE {w}")?;
        }
        if !self.group_by.is_empty() {
            f.write_str(" GROUP BY ")?;
            write_list(f, &self.group_by)?;
        }
        if let Some(h) = &self.having {
            write!(f, " HAVING {h}")?;
        }
        if !self.order_by.is_empty() {
            f.write_str(" ORDER BY ")?;
            for (i, o) in self.order_by.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{} {}", o.expr, if o.desc { "DESC" } else { "ASC" })?;
                match o.nulls_first {
                    Some(true) => f.write_str(" NULLS FIRST")?,
                    Some(false) => f.write_str(" NULLS LAST")?,
                    None => {}
                }
            }
        }
        if let Some(l) = &self.limit {
            write!(f, " LIMIT {l}")?;
        }
        if let Some(o) = &self.offset {
            write!(f, " OFFSET {o}")?;
        }
        Ok(())
    }
}
