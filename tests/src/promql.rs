//! Just enough of PromQL to say which metrics, labels and functions an expression names: what
//! the dashboard and alert checks ([`crate::monitoring`]) compare with what the programs
//! export. Not a parser: it tokenizes, skips strings, durations and numbers, and classifies each
//! word by what follows it, which is all a misspelt name needs to be caught.

use std::collections::BTreeSet;

/// The names an expression uses.
#[derive(Debug, Default)]
pub struct Names {
    /// Metric names: bare words that are not functions or keywords, and `__name__` matchers.
    pub metrics: BTreeSet<String>,
    /// Label names in `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` lists.
    pub grouping: BTreeSet<String>,
    /// Label matchers: (label, operator, value).
    pub matchers: Vec<(String, String, String)>,
    /// Functions and aggregations called.
    pub functions: BTreeSet<String>,
    /// Grafana variables (`$name`, `${name}`), anywhere in the text.
    pub variables: BTreeSet<String>,
}

/// PromQL's functions (Prometheus 2.x and 3.x), and `start`/`end` of the `@` modifier.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "deg",
    "delta",
    "deriv",
    "double_exponential_smoothing",
    "end",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_stddev",
    "histogram_stdvar",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "mad_over_time",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_by_label",
    "sort_by_label_desc",
    "sort_desc",
    "sqrt",
    "start",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// Aggregation operators: called like functions, or followed by `by`/`without`.
const AGGREGATIONS: &[&str] = &[
    "avg",
    "bottomk",
    "count",
    "count_values",
    "group",
    "limit_ratio",
    "limitk",
    "max",
    "min",
    "quantile",
    "stddev",
    "stdvar",
    "sum",
    "topk",
];

/// Keywords followed by a list of label names (optional after group_left/group_right).
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords: binary operators, `bool`, `offset`, and the special numbers.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "atan2", "bool", "offset", "inf", "nan",
];

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn skip_ws(c: &[char], mut i: usize) -> usize {
    while i < c.len() && c[i].is_whitespace() {
        i += 1;
    }
    i
}

fn word(c: &[char], start: usize) -> (String, usize) {
    let mut i = start;
    while i < c.len() && is_word(c[i]) {
        i += 1;
    }
    (c[start..i].iter().collect(), i)
}

/// A quoted string starting at `start`: its content (escapes kept) and the index after it.
fn string(c: &[char], start: usize) -> Result<(String, usize), String> {
    let quote = c[start];
    let mut i = start + 1;
    while i < c.len() {
        if c[i] == '\\' && quote != '`' {
            i += 2;
            continue;
        }
        if c[i] == quote {
            return Ok((c[start + 1..i].iter().collect(), i + 1));
        }
        i += 1;
    }
    Err(format!("unterminated string from character {start}"))
}

/// `(a, b, …)` at `start`: the names, and the index after `)`.
fn label_list(c: &[char], start: usize, out: &mut BTreeSet<String>) -> Result<usize, String> {
    let mut i = start + 1;
    loop {
        i = skip_ws(c, i);
        match c.get(i) {
            Some(')') => return Ok(i + 1),
            Some(',') => i += 1,
            Some(&ch) if is_word_start(ch) => {
                let (name, next) = word(c, i);
                out.insert(name);
                i = next;
            }
            other => return Err(format!("bad label list at character {i}: {other:?}")),
        }
    }
}

/// `{l="v", …}` at `start`: the matchers, and the index after `}`.
fn matchers(c: &[char], start: usize, names: &mut Names) -> Result<usize, String> {
    let mut i = start + 1;
    loop {
        i = skip_ws(c, i);
        match c.get(i) {
            Some('}') => return Ok(i + 1),
            Some(',') => {
                i += 1;
                continue;
            }
            Some(&ch) if is_word_start(ch) => {}
            other => return Err(format!("bad label matcher at character {i}: {other:?}")),
        }
        let (label, next) = word(c, i);
        i = skip_ws(c, next);
        let op: String = match (c.get(i), c.get(i + 1)) {
            (Some('='), Some('~')) | (Some('!'), Some('=')) | (Some('!'), Some('~')) => {
                c[i..i + 2].iter().collect()
            }
            (Some('='), _) => "=".to_string(),
            other => return Err(format!("no matcher operator after {label}: {other:?}")),
        };
        i = skip_ws(c, i + op.len());
        if !matches!(c.get(i), Some('"' | '\'' | '`')) {
            return Err(format!("the value of {label} is not a string"));
        }
        let (value, next) = string(c, i)?;
        i = next;
        if label == "__name__" && op == "=" {
            names.metrics.insert(value.clone());
        }
        names.matchers.push((label, op, value));
    }
}

/// Grafana variables in a text: `$name` and `${name}` (with an optional `:format`).
pub fn variables(text: &str) -> BTreeSet<String> {
    let c: Vec<char> = text.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] != '$' {
            i += 1;
            continue;
        }
        let braced = c.get(i + 1) == Some(&'{');
        let start = if braced { i + 2 } else { i + 1 };
        let (name, next) = word(&c, start);
        if !name.is_empty() {
            out.insert(name);
        }
        i = next.max(i + 1);
    }
    out
}

/// The names `expr` uses, or why it cannot be read (an unknown function, unbalanced brackets,
/// an unterminated string).
pub fn scan(expr: &str) -> Result<Names, String> {
    let c: Vec<char> = expr.chars().collect();
    let mut names = Names {
        variables: variables(expr),
        ..Names::default()
    };
    let mut depth = 0i32;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '#' {
            // A comment, to the end of the line.
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if matches!(ch, '"' | '\'' | '`') {
            i = string(&c, i)?.1;
        } else if ch == '{' {
            i = matchers(&c, i, &mut names)?;
        } else if ch == '[' {
            // A range or subquery: durations and Grafana's interval variables only.
            let close = c[i..]
                .iter()
                .position(|&x| x == ']')
                .ok_or_else(|| format!("unterminated [ at character {i}"))?;
            i += close + 1;
        } else if ch == '$' {
            // A Grafana variable outside a string (already collected).
            i += 1;
            if c.get(i) == Some(&'{') {
                while i < c.len() && c[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                i = word(&c, i).1;
            }
        } else if ch.is_ascii_digit()
            || (ch == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration, with an exponent's sign: 1e+06, 0.5, 5m.
            i += 1;
            while i < c.len() {
                let exponent_sign = matches!(c[i], '+' | '-')
                    && matches!(c[i - 1], 'e' | 'E')
                    && c[i - 2].is_ascii_digit();
                if is_word(c[i]) || c[i] == '.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
        } else if is_word_start(ch) {
            let (w, next) = word(&c, i);
            i = next;
            let lower = w.to_ascii_lowercase();
            let after = skip_ws(&c, i);
            if GROUPING.contains(&lower.as_str()) {
                if c.get(after) == Some(&'(') {
                    i = label_list(&c, after, &mut names.grouping)?;
                } else if !lower.starts_with("group_") {
                    return Err(format!("`{w}` without a list of labels"));
                }
            } else if KEYWORDS.contains(&lower.as_str()) {
            } else if AGGREGATIONS.contains(&lower.as_str()) {
                names.functions.insert(lower);
            } else if c.get(after) == Some(&'(') {
                if !FUNCTIONS.contains(&w.as_str()) {
                    return Err(format!("`{w}` is not a PromQL function"));
                }
                names.functions.insert(w);
            } else {
                names.metrics.insert(w);
            }
        } else if ch == '(' {
            depth += 1;
            i += 1;
        } else if ch == ')' {
            depth -= 1;
            if depth < 0 {
                return Err(format!("unbalanced ) at character {i}"));
            }
            i += 1;
        } else if "+-*/%^=!<>,@".contains(ch) {
            i += 1;
        } else {
            return Err(format!("unexpected {ch:?} at character {i}"));
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses".to_string());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_told_apart_by_what_follows_them() {
        let n = scan(
            r#"histogram_quantile(0.99, sum by (pod, le) (rate(a_bucket{job="x", role=~"l|f"}[5m])))
               > 1e+06 and on (pod) b offset 5m or sum(c) without (d) * on (e) group_left (f) g"#,
        )
        .unwrap();
        assert_eq!(
            n.metrics,
            ["a_bucket", "b", "c", "g"].map(String::from).into()
        );
        assert_eq!(
            n.grouping,
            ["d", "e", "f", "le", "pod"].map(String::from).into()
        );
        assert_eq!(n.matchers.len(), 2);
        assert_eq!(n.matchers[1], ("role".into(), "=~".into(), "l|f".into()));
    }

    #[test]
    fn grafana_variables_are_collected_and_skipped() {
        let n = scan(r#"rate(x{ns=~"$namespace"}[$__rate_interval])"#).unwrap();
        assert_eq!(n.metrics, ["x"].map(String::from).into());
        assert_eq!(
            n.variables,
            ["__rate_interval", "namespace"].map(String::from).into()
        );
    }

    #[test]
    fn broken_expressions_are_refused() {
        for bad in [
            "rate(x[5m]",
            "x)",
            r#"x{a="b}"#,
            "histogram_quantle(0.5, x)",
            "sum by x",
            r#"x{a~"b"}"#,
        ] {
            assert!(scan(bad).is_err(), "{bad}");
        }
    }
}
